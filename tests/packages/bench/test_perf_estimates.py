"""The memory model and GPU-hour estimates (bench/perf/estimates.py): arithmetic checked
against hand-computed figures, and `hizfo-bench perf --estimate` on the bundled suites."""

from __future__ import annotations

import pytest
from helpers.specs import make_spec

from bench import model_configs
from bench.method import MethodTraits
from bench.perf import estimates

P7B = model_configs.parameter_count(model_configs.resolve("llama-7b"))


@pytest.mark.parametrize(
    ("method", "config", "precision", "per_parameter"),
    [
        ("fo-adamw", {}, "bf16-mixed", 16),  # fp32 weights, gradient, two moments
        ("fo-adamw", {}, "fp32", 16),
        ("fo-adamw", {}, "bf16", 8),
        ("mezo", {}, "bf16-mixed", 4),  # weights only
        ("lora", {}, "bf16", 2),  # base weights (adapters not counted)
        ("hizfo", {"rho": 0.25}, "fp32", 4 * (1 + 3 * 0.25)),
        ("hizfo[zo-off]", {"rho": 0.5}, "fp32", 10),
    ],
)
def test_state_bytes_per_parameter(method, config, precision, per_parameter) -> None:
    m = estimates.memory_bytes("meta-llama/Llama-2-7b-hf", method, config, precision, 1, False)
    assert m["parameters"] == P7B
    assert m["state"] == pytest.approx(per_parameter * P7B)


def test_activations_and_gpus_needed() -> None:
    # 8 x 512 tokens, Llama-2-7B (hidden 4096, 32 layers, vocab 32000), 16-bit activations.
    tokens = 8 * 512
    m = estimates.memory_bytes(
        "meta-llama/Llama-2-7b-hf", "fo-adamw", {}, "bf16-mixed", tokens, True
    )
    assert m["activations"] == tokens * (34 * 4096 * 32 + 8 * 32000)
    assert m["total"] == m["state"] + m["activations"]
    # 107.8 GB of state and 19.3 GB of activations: two 80 GB GPUs at 90%.
    assert estimates.gpus_needed(m["total"]) == 2
    assert estimates.gpus_needed(71e9) == 1 and estimates.gpus_needed(73e9) == 2


def test_trial_hours_flop_bound_and_launch_bound() -> None:
    fo = MethodTraits(step_passes=(1.0, 1.0))  # 3 forwards per step
    spec = make_spec(
        "fo-adamw", model="meta-llama/Llama-2-7b-hf", limit=16, steps=100, max_length=512
    )
    hours = estimates.trial_hours(spec, fo)
    flops = 100 * 3 * 2 * P7B * 4 * 512  # make_spec's batch of 4
    assert hours["train"] == pytest.approx(
        flops / (estimates.MFU * estimates.H100.bf16_flops) / 3600
    )
    # Test generation: 16 documents / eval batch 4 x 8 tokens, each step reading bf16 weights.
    # The 8 ms of reading 13.5 GB at half of 3.35 TB/s is under the launch-bound floor of
    # 32 layers x 0.4 ms, so the floor counts.
    step = 2 * P7B / (estimates.DECODE_EFFICIENCY * estimates.H100.bandwidth)
    step = max(step, 32 * estimates.LAYER_SECONDS)
    assert step == 32 * estimates.LAYER_SECONDS
    assert hours["eval"] == pytest.approx(4 * 8 * step / 3600)
    # SmolLM2 at 4 x 96 tokens is launch-bound: 30 layers x LAYER_SECONDS per forward.
    small = make_spec("fo-adamw", model="smollm2-135m", steps=10, limit=None)
    floor = 30 * estimates.LAYER_SECONDS
    assert estimates.trial_hours(small, fo)["train"] == pytest.approx(10 * 3 * floor / 3600)
    zero = MethodTraits(step_passes=(0.0, 0.0))
    assert estimates.trial_hours(small, zero)["train"] == 0


def test_estimate_command(capsys) -> None:
    from bench.cli import main

    assert main(["perf", "--estimate", "paper"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ESTIMATES")
    rows = {tuple(line.split()[:2]): line.split() for line in out.splitlines()}
    # FO AdamW of OPT-13B needs four 80 GB GPUs, MeZO one.
    assert rows[("facebook/opt-13b", "fo-adamw")][-1] == "4"
    assert rows[("facebook/opt-13b", "mezo")][-1] == "1"
    assert rows[("all", "528")]  # every final trial of paper counted
    assert main(["perf", "--estimate", "no-such-suite"]) == 2


def test_estimate_counts_a_suites_tuning_trials(capsys, tmp_path) -> None:
    """A suite that tunes gets a tuning line: every stage's points on every tuning seed
    (claims-tune: fo-adamw 8 + mezo 8 + hizfo 8 (fo_lr; zo_lr is not searched) per task,
    2 tasks = 48)."""
    from bench.cli import main

    assert main(["perf", "--estimate", "claims-tune"]) == 0
    out = capsys.readouterr().out
    (line,) = [ln for ln in out.splitlines() if ln.startswith("tuning (before extensions)")]
    assert line.split()[3] == "48"
    assert main(["perf", "--estimate", "claims"]) == 0
    assert "tuning" not in capsys.readouterr().out
