"""The baseline plugins in plugins/ (addax, zo-sgd-momentum, zo-adam): found through the
entry-point group, each lowers the loss of a tiny model, and each reduces exactly to the
method or optimizer it is defined from (SGD / AdamW / MeZO / torch's momentum SGD and Adam
fed the SPSA estimate)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO
from helpers.tiny import VOCAB, tiny_llama

from bench import registry
from bench.method import TrainContext, causal_lm_loss
from bench.registry import MethodError, load_method
from hizfo.zo import SPSA, SPSAConfig, default_no_decay, derive_seed

PLUGINS = {
    "addax": ("hizfo-bench-addax", "hizfo_bench_addax:Addax"),
    "zo-sgd-momentum": (
        "hizfo-bench-zo-sgd-momentum",
        "hizfo_bench_zo_sgd_momentum:ZOSGDMomentum",
    ),
    "zo-adam": ("hizfo-bench-zo-adam", "hizfo_bench_zo_adam:ZOAdam"),
}
SEED = 0
LENGTHS = (16, 12, 6, 4)  # real tokens per example; the batch is right-padded to 16


def _in_project_venv() -> bool:
    return Path(sys.prefix).resolve() == (REPO / ".venv").resolve()


def _method(name: str, **config):
    """The plugin's method built from `config`; skip (outside the project venv) or fail
    (inside it, where scripts/setup.sh installs the plugins) when it is not installed."""
    registry._entry_points.cache_clear()
    try:
        cls = load_method(name)
    except MethodError as e:
        if _in_project_venv():
            pytest.fail(f"{e}\nThe project venv must have it: run `bash scripts/setup.sh`.")
        pytest.skip(f"plugin {name!r} is not installed here (pip install -e plugins/{name}): {e}")
    return cls(cls.config_class(**config))


def _batch() -> dict[str, torch.Tensor]:
    """Four right-padded examples of different lengths; the first two tokens are prompt."""
    gen = torch.Generator().manual_seed(1)
    width = max(LENGTHS)
    ids = torch.randint(0, VOCAB, (len(LENGTHS), width), generator=gen)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(LENGTHS):
        mask[i, :n] = 1
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :2] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _ctx(steps: int) -> TrainContext:
    return TrainContext(total_steps=steps, seed=SEED, device=torch.device("cpu"))


def _params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, atol: float) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        diff = (p - q).abs().max().item()
        assert diff <= atol, f"{name}: weights differ by {diff:.3g} > {atol:g}"


def _largest_move(model: torch.nn.Module, start: list[torch.Tensor]) -> float:
    return max((p - s).abs().max().item() for p, s in zip(model.parameters(), start, strict=True))


# ZO paths that are equal in exact arithmetic differ in float32 rounding (a fused restore +
# update against separate passes, ~1e-7 on the weights), and the next step's projected
# gradient divides loss differences by 2 eps, which amplifies that 500x. Those comparisons
# therefore allow 2e-5 and check that the weights moved far more than that.
ZO_ATOL = 2e-5


def _z(model: torch.nn.Module, seed: int) -> list[torch.Tensor]:
    """z(seed) per unique weight tensor, materialised through the public SPSA API."""
    seen: set[int] = set()
    named = [(n, p) for n, p in model.named_parameters() if not (id(p) in seen or seen.add(id(p)))]
    zs = [torch.zeros_like(p) for _, p in named]
    SPSA([(n, z) for (n, _), z in zip(named, zs, strict=True)], SPSAConfig(eps=1.0)).perturb_(
        seed, 1.0
    )
    return zs


def _unique(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    seen: set[int] = set()
    return [p for p in model.parameters() if not (id(p) in seen or seen.add(id(p)))]


def _projected_grad(model: torch.nn.Module, batch, seed: int, eps: float) -> tuple[float, float]:
    """(g, (L+ + L-) / 2) by an independent SPSA probe; the model is restored."""
    seen: set[int] = set()
    named = [(n, p) for n, p in model.named_parameters() if not (id(p) in seen or seen.add(id(p)))]
    spsa = SPSA(named, SPSAConfig(eps=eps))
    with torch.no_grad():
        spsa.perturb_(seed, 1.0)
        plus = float(causal_lm_loss(model, batch))
        spsa.perturb_(seed, -2.0)
        minus = float(causal_lm_loss(model, batch))
        spsa.perturb_(seed, 1.0)
    return (plus - minus) / (2 * eps), (plus + minus) / 2


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_plugin_registers_through_its_own_distribution(name):
    _method(name)  # skips or fails with the reason when it is not installed
    ep = registry._entry_points()[name]
    distribution, value = PLUGINS[name]
    assert ep.value == value
    assert ep.dist is not None and ep.dist.name == distribution


@pytest.mark.parametrize(
    ("name", "config", "steps"),
    [
        ("addax", {"lr": 0.2, "alpha": 0.01}, 10),
        ("addax", {"lr": 0.01, "alpha": 0.01, "optimizer": "adamw"}, 10),
        ("zo-sgd-momentum", {"lr": 1e-3, "momentum": 0.9}, 40),
        ("zo-adam", {"lr": 1e-2}, 40),
    ],
)
def test_plugin_lowers_the_loss_of_a_tiny_model(name, config, steps):
    method = _method(name, **config)
    model = method.setup(tiny_llama(seed=SEED), _ctx(steps))
    batch = _batch()
    with torch.no_grad():
        before = float(causal_lm_loss(model, batch))
    for step in range(steps):
        stats = method.step(batch, step)
        assert torch.isfinite(torch.tensor(stats.loss))
    with torch.no_grad():
        after = float(causal_lm_loss(model, batch))
    assert after < before - 0.05, (before, after)
    assert method.summary()["trainable_parameters"] > 0


def test_addax_routes_by_length_and_the_threshold_wins():
    from hizfo_bench_addax.routing import route, sequence_lengths, take

    _method("addax")
    batch = _batch()
    lengths = sequence_lengths(batch)
    assert lengths.tolist() == list(LENGTHS)
    assert route(lengths, 8, zo_fraction=0.25).tolist() == [True, True, False, False]
    assert route(lengths, 12, zo_fraction=1.0).tolist() == [
        True,
        False,
        False,
        False,
    ]  # "more than"
    assert route(lengths, None, zo_fraction=0.25).tolist() == [True, False, False, False]
    assert route(lengths, None, zo_fraction=0.0).tolist() == [False] * 4
    short = take(batch, ~route(lengths, 8, 0.5))
    assert short["input_ids"].shape == (2, 6)  # cut to its longest example
    # Cutting the padding leaves the loss as it was.
    model = tiny_llama(seed=SEED)
    full = {k: v[2:] for k, v in batch.items()}
    with torch.no_grad():
        assert float(causal_lm_loss(model, short)) == pytest.approx(
            float(causal_lm_loss(model, full)), abs=1e-6
        )


def test_addax_all_fo_equals_sgd_step_for_step():
    lr, alpha = 0.1, 0.2
    method = _method("addax", lr=lr, alpha=alpha, length_threshold=10**6, weight_decay=0.0)
    model = method.setup(tiny_llama(seed=SEED), _ctx(3))
    reference = tiny_llama(seed=SEED)
    sgd = torch.optim.SGD(reference.parameters(), lr=lr * (1 - alpha))
    batch = _batch()
    for step in range(3):
        stats = method.step(batch, step)
        loss = causal_lm_loss(reference, batch)
        loss.backward()
        sgd.step()
        sgd.zero_grad(set_to_none=True)
        assert stats.loss == pytest.approx(loss.item(), abs=1e-6)
        assert (stats.forward_passes, stats.backward_passes) == (1, 1)
        _assert_same_weights(model, reference, atol=1e-7)
    # In place: no gradient is left behind (a leaked one would also break the next step).
    assert all(p.grad is None for p in model.parameters())


def test_addax_all_fo_with_adamw_equals_adamw_step_for_step():
    lr, alpha, wd = 1e-2, 0.2, 0.1
    method = _method(
        "addax", lr=lr, alpha=alpha, length_threshold=10**6, weight_decay=wd, optimizer="adamw"
    )
    model = method.setup(tiny_llama(seed=SEED), _ctx(3))
    reference = tiny_llama(seed=SEED)
    named = [(n, p) for n, p in reference.named_parameters()]
    adamw = torch.optim.AdamW(
        [
            {"params": [p for n, p in named if not default_no_decay(n, p)], "weight_decay": wd},
            {"params": [p for n, p in named if default_no_decay(n, p)], "weight_decay": 0.0},
        ],
        lr=lr,
    )
    batch = _batch()
    for step in range(3):
        stats = method.step(batch, step)
        loss = causal_lm_loss(reference, batch)
        (loss * (1 - alpha)).backward()
        adamw.step()
        adamw.zero_grad(set_to_none=True)
        assert stats.loss == pytest.approx(loss.item(), abs=1e-6)
        _assert_same_weights(model, reference, atol=1e-7)


def test_addax_all_zo_equals_mezo_step_for_step():
    lr, alpha, eps, wd = 0.5, 0.01, 1e-3, 0.2
    method = _method("addax", lr=lr, alpha=alpha, eps=eps, length_threshold=0, weight_decay=wd)
    # Addax's ZO term moves at lr * alpha; its decay at lr * wd.
    mezo = _method("mezo", lr=lr * alpha, eps=eps, weight_decay=wd / alpha)
    model = method.setup(tiny_llama(seed=SEED), _ctx(3))
    reference = mezo.setup(tiny_llama(seed=SEED), _ctx(3))
    batch = _batch()
    start = _params(model)
    for step in range(3):
        stats = method.step(batch, step)
        expected = mezo.step(batch, step)
        assert stats.loss == pytest.approx(expected.loss, abs=1e-6)
        assert stats.extra["projected_grad"] == pytest.approx(
            expected.extra["projected_grad"], rel=1e-3
        )
        assert (stats.forward_passes, stats.backward_passes) == (2, 0)
        _assert_same_weights(model, reference, atol=ZO_ATOL)
    assert _largest_move(model, start) > 100 * ZO_ATOL


def test_addax_mixed_step_is_the_weighted_sum_of_both_estimates():
    lr, alpha, eps = 0.05, 0.3, 1e-3
    method = _method("addax", lr=lr, alpha=alpha, eps=eps, length_threshold=8)
    model = method.setup(tiny_llama(seed=SEED), _ctx(1))
    batch = _batch()
    long = {k: v[:2] for k, v in batch.items()}
    short = {k: v[2:, :6] for k, v in batch.items()}

    reference = tiny_llama(seed=SEED)
    seed = derive_seed(SEED, 0)
    g0, zo_loss = _projected_grad(reference, long, seed, eps)
    fo_loss = causal_lm_loss(reference, short)
    fo_loss.backward()
    zs = _z(reference, seed)
    with torch.no_grad():
        for p, z in zip(_unique(reference), zs, strict=True):
            p.sub_(lr * (alpha * g0 * z + (1 - alpha) * p.grad))

    stats = method.step(batch, 0)
    assert (stats.forward_passes, stats.backward_passes) == (3, 1)
    assert (stats.extra["zo_examples"], stats.extra["fo_examples"]) == (2.0, 2.0)
    assert stats.extra["projected_grad"] == pytest.approx(g0, rel=1e-5)
    # The reported loss is the target-token weighted mean of the two parts: the batch loss.
    n_long = int((long["labels"][:, 1:] != -100).sum())
    n_short = int((short["labels"][:, 1:] != -100).sum())
    expected = (zo_loss * n_long + fo_loss.item() * n_short) / (n_long + n_short)
    assert stats.loss == pytest.approx(expected, abs=1e-6)
    _assert_same_weights(model, reference, atol=1e-6)  # one step: no amplification yet


def test_zo_sgd_momentum_without_momentum_equals_mezo():
    lr, eps, wd = 1e-3, 1e-3, 0.1
    method = _method("zo-sgd-momentum", lr=lr, eps=eps, momentum=0.0, weight_decay=wd)
    mezo = _method("mezo", lr=lr, eps=eps, weight_decay=wd)
    model = method.setup(tiny_llama(seed=SEED), _ctx(3))
    reference = mezo.setup(tiny_llama(seed=SEED), _ctx(3))
    batch = _batch()
    start = _params(model)
    for step in range(3):
        stats = method.step(batch, step)
        expected = mezo.step(batch, step)
        assert stats.loss == pytest.approx(expected.loss, abs=1e-6)
        _assert_same_weights(model, reference, atol=ZO_ATOL)
    assert _largest_move(model, start) > 100 * ZO_ATOL


def _zo_reference(optimizer_cls, eps: float, steps: int, **kwargs):
    """Weights after `steps` of torch's own optimizer fed g z, with g and z from SPSA."""
    model = tiny_llama(seed=SEED)
    params = _unique(model)
    optimizer = optimizer_cls(params, **kwargs)
    batch = _batch()
    for step in range(steps):
        seed = derive_seed(SEED, step)
        g, _ = _projected_grad(model, batch, seed, eps)
        for p, z in zip(params, _z(model, seed), strict=True):
            p.grad = g * z
        optimizer.step()
    return model


def test_zo_sgd_momentum_is_torch_momentum_sgd_on_the_spsa_estimate():
    lr, eps, mu = 1e-3, 1e-3, 0.9
    method = _method("zo-sgd-momentum", lr=lr, eps=eps, momentum=mu)
    model = method.setup(tiny_llama(seed=SEED), _ctx(4))
    for step in range(4):
        method.step(_batch(), step)
    reference = _zo_reference(torch.optim.SGD, eps, 4, lr=lr, momentum=mu)
    _assert_same_weights(model, reference, atol=ZO_ATOL)
    assert method.summary()["state_numel"] == method.summary()["trainable_parameters"]


def test_zo_adam_is_torch_adam_on_the_spsa_estimate():
    lr, eps = 1e-2, 1e-3
    method = _method("zo-adam", lr=lr, eps=eps)
    model = method.setup(tiny_llama(seed=SEED), _ctx(4))
    for step in range(4):
        stats = method.step(_batch(), step)
        assert (stats.forward_passes, stats.backward_passes) == (2, 0)
        # g z exists one tensor at a time (SPSA.tensor_z): no gradient is kept between steps.
        assert all(p.grad is None for p in model.parameters())
    reference = _zo_reference(torch.optim.Adam, eps, 4, lr=lr)
    _assert_same_weights(model, reference, atol=ZO_ATOL)
    summary = method.summary()
    assert summary["state_numel"] == 2 * summary["trainable_parameters"]  # Adam's moments only


def test_configs_reject_bad_settings():
    for name, bad in [
        ("addax", {"optimizer": "lion"}),
        ("addax", {"alpha": 1.5}),
        ("addax", {"zo_fraction": -0.1}),
        ("zo-sgd-momentum", {"momentum": 1.0}),
        ("zo-adam", {"eps": 0.0}),
    ]:
        with pytest.raises(ValueError):
            _method(name, **bad)
