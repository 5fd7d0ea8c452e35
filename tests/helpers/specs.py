"""make_spec: a TrialSpec on the tiny model with the small settings unit tests use."""

from __future__ import annotations

from typing import Any

from bench.spec import DevConfig, EvalConfig, TrainConfig, TrialSpec


def make_spec(
    method: str,
    config: dict[str, Any] | None = None,
    *,
    task: str = "math-mini",
    model: str = "tiny",
    seed: int = 0,
    steps: int = 6,
    batch_size: int = 4,
    max_length: int = 96,
    train_examples: int | None = 32,
    log_every: int = 2,
    limit: int | None = 4,
    eval_batch_size: int = 4,
    max_gen_toks: int = 8,
    dev: DevConfig | None = None,
    **spec: Any,
) -> TrialSpec:
    """A trial of `method` (its config dict, default {}) that runs in seconds on CPU."""
    return TrialSpec(
        method=method,
        task=task,
        model=model,
        seed=seed,
        method_config=dict(config or {}),
        train=TrainConfig(
            steps=steps,
            batch_size=batch_size,
            max_length=max_length,
            train_examples=train_examples,
            log_every=log_every,
        ),
        eval=EvalConfig(limit=limit, batch_size=eval_batch_size, max_gen_toks=max_gen_toks),
        dev=dev or DevConfig(),
        **spec,
    )
