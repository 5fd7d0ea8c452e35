"""plugins/mezo-gv: MeZO-GV and MeZO-Greedy found through their distribution's entry
points, MeZO bit for bit with a pool of one, Hi-ZFO's ZO part at rho 0 bit for bit the
plugin, exact passes, and a lower loss on a tiny model."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO
from helpers.tiny import VOCAB, tiny_llama

from bench import registry
from bench.config import ConfigError, build
from bench.method import TrainContext, causal_lm_loss, method_traits
from bench.registry import MethodError, load_method

DISTRIBUTION = "hizfo-bench-mezo-gv"
ENTRY_POINTS = {
    "mezo-gv": "hizfo_bench_mezo_gv:MeZOGV",
    "mezo-greedy": "hizfo_bench_mezo_gv:MeZOGreedy",
}
SEED = 0


def _cls(name: str) -> type:
    """The plugin's class through the registry; skip (outside the project venv) or fail
    (inside it, where scripts/setup.sh installs every plugins/*/)."""
    registry._entry_points.cache_clear()
    try:
        return load_method(name)
    except MethodError as e:
        if Path(sys.prefix).resolve() == (REPO / ".venv").resolve():
            pytest.fail(f"{e}\nThe project venv must have it: run `bash scripts/setup.sh`.")
        pytest.skip(f"plugin {name!r} is not installed here (pip install -e plugins/mezo-gv)")


def _method(name: str, **config):
    cls = _cls(name)
    return cls(build(cls.config_class, config, f"methods.{name}.config"))


def _batch(seed: int = 1) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, VOCAB, (4, 12), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    mask[2:, 8:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def _ctx(steps: int) -> TrainContext:
    batch = _batch(99)
    return TrainContext(
        total_steps=steps,
        seed=SEED,
        device=torch.device("cpu"),
        loss_fn=causal_lm_loss,
        sample_batches=lambda n: [batch] * n,
    )


def _assert_bitwise(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_registers_through_its_own_distribution_with_its_traits(name):
    cls = _cls(name)
    ep = registry._entry_points()[name]
    assert ep.value == ENTRY_POINTS[name]
    assert ep.dist is not None and ep.dist.name == DISTRIBUTION
    for attr in ("step_passes", "display_order"):
        assert attr in vars(cls), f"{name} does not declare {attr}"
    traits = method_traits(cls)
    assert traits.step_passes == (6.0, 0.0) and not traits.is_reference
    assert traits.display_order > 40  # after the built-in rows


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("m", [None, 1, 3])
def test_a_step_reports_exactly_its_passes(name, m):
    config = {} if m is None else {"candidates": m}
    method = _method(name, **config)
    model = method.setup(tiny_llama(seed=SEED), _ctx(1))
    calls = [0]

    def counting(model, batch):
        calls[0] += 1
        return causal_lm_loss(model, batch)

    method.ctx.loss_fn = counting
    stats = method.step(_batch(), 0)
    expected = method_traits(type(method)).step_passes[0] if m is None else (m + 2 if m > 1 else 2)
    assert stats.forward_passes == calls[0] == expected and stats.backward_passes == 0
    summary = method.summary()
    assert summary["forward_passes_per_step"] == expected
    assert summary["trainable_parameters"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_a_pool_of_one_is_mezo_bit_for_bit(name):
    """candidates: 1 ranks nothing: the step is `mezo`'s with the same seed, settings and
    schedule, the same floating-point operations."""
    config = {"lr": 1e-2, "eps": 1e-3, "weight_decay": 0.1, "schedule": "linear"}
    method = _method(name, candidates=1, **config)
    mezo = _method("mezo", **config)
    model = method.setup(tiny_llama(seed=SEED), _ctx(4))
    reference = mezo.setup(tiny_llama(seed=SEED), _ctx(4))
    for step in range(4):
        batch = _batch(step)
        got, want = method.step(batch, step), mezo.step(batch, step)
        assert (got.loss, got.forward_passes) == (want.loss, want.forward_passes)
        assert got.extra["projected_grad"] == want.extra["projected_grad"]
        _assert_bitwise(model, reference)


@pytest.mark.parametrize(("name", "estimator"), [("mezo-gv", "gv"), ("mezo-greedy", "greedy")])
def test_hizfo_at_rho_zero_is_the_plugin_bit_for_bit(name, estimator):
    config = {"lr": 1e-2, "weight_decay": 0.1, "candidates": 3}
    method = _method(name, **config)
    hizfo = _method(
        "hizfo",
        rho=0.0,
        zo_lr=1e-2,
        zo_weight_decay=0.1,
        zo_estimator=estimator,
        zo_candidates=3,
    )
    model = method.setup(tiny_llama(seed=SEED), _ctx(3))
    reference = hizfo.setup(tiny_llama(seed=SEED), _ctx(3))
    for step in range(3):
        batch = _batch(step)
        got, want = method.step(batch, step), hizfo.step(batch, step)
        assert (got.loss, got.forward_passes, got.backward_passes) == (
            want.loss,
            want.forward_passes,
            want.backward_passes,
        )
        assert got.extra["projected_grad"] == want.extra["projected_grad"]
        assert got.extra["z_draws"] == want.extra["z_draws"]
        _assert_bitwise(model, reference)


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("mezo-gv", {"lr": 2e-3}),
        ("mezo-gv", {"lr": 3e-3, "normalize": True}),
        ("mezo-greedy", {"lr": 3e-3}),
    ],
)
def test_lowers_the_loss_of_a_tiny_model(name, config):
    method = _method(name, **config)
    model = method.setup(tiny_llama(seed=SEED), _ctx(30))
    batch = _batch()
    with torch.no_grad():
        before = float(causal_lm_loss(model, batch))
    for step in range(30):
        assert torch.isfinite(torch.tensor(method.step(batch, step).loss))
    with torch.no_grad():
        after = float(causal_lm_loss(model, batch))
    assert after < before - 0.05, (before, after)


def test_keep_direction_is_the_same_step_to_rounding():
    kept = _method("mezo-gv", lr=1e-2, keep_direction=True)
    plain = _method("mezo-gv", lr=1e-2)
    a = kept.setup(tiny_llama(seed=SEED), _ctx(2))
    b = plain.setup(copy.deepcopy(tiny_llama(seed=SEED)), _ctx(2))
    for step in range(2):
        x, y = kept.step(_batch(step), step), plain.step(_batch(step), step)
        assert x.extra["z_draws"] == 12 and y.extra["z_draws"] == 20
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=2e-5, msg=name)


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("mezo-gv", {"candidates": 0}),
        ("mezo-gv", {"elite_fraction": 1.0}),
        ("mezo-gv", {"lr": 0.0}),
        ("mezo-gv", {"schedule": "step"}),
        ("mezo-greedy", {"candidates": 1.5}),
        ("mezo-greedy", {"elite_fraction": 0.5}),  # MeZO-Greedy has no elite
    ],
)
def test_configs_reject_bad_settings(name, bad):
    with pytest.raises(ConfigError):
        _method(name, **bad)
