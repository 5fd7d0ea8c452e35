"""MeZO-GV and MeZO-Greedy in hizfo.zo (GuidedSPSA) and as Hi-ZFO's ZO part: the pool's
direction rules, MeZO bit for bit with a pool of one, the step against a dense reference,
exact pass and draw counts, the guiding vector's alignment with the gradient of a
quadratic, and Hi-ZFO with zo_estimator gv / greedy (rho 0: the estimator itself, bit for
bit)."""

from __future__ import annotations

import copy
import math
import statistics

import pytest
import torch
from helpers.tiny import closure_for, tiny_llama
from helpers.tiny import token_batch as batch

from hizfo import HiZFO, HiZFOConfig
from hizfo.zo import (
    SPSA,
    GuidedConfig,
    GuidedSPSA,
    SPSAConfig,
    default_no_decay,
    derive_seed,
    elite_count,
    greedy_terms,
    guiding_terms,
)


def _spsa(model: torch.nn.Module, eps: float = 1e-3, wd: float = 0.0) -> SPSA:
    return SPSA(model.named_parameters(), SPSAConfig(eps=eps, weight_decay=wd))


def _counting(model: torch.nn.Module, ids: torch.Tensor) -> tuple[list[int], object]:
    calls = [0]
    inner = closure_for(model, ids)

    def loss() -> torch.Tensor:
        calls[0] += 1
        return inner()

    return calls, loss


def _assert_bitwise(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_guiding_terms_contrast_the_elite_with_the_rest() -> None:
    seeds = [10, 11, 12, 13, 14]
    losses = [3.0, 1.0, 2.0, 5.0, 1.0]  # a tie between 11 and 14: the lower index first
    assert elite_count(5, 0.5) == 2 and elite_count(1, 0.5) == 1 and elite_count(2, 0.1) == 1
    terms = dict(guiding_terms(seeds, losses, 0.5))
    assert terms == {10: -1 / 3, 11: 0.5, 12: -1 / 3, 13: -1 / 3, 14: 0.5}
    assert dict(guiding_terms(seeds, losses, 0.2)) == {
        10: -0.25,
        11: 1.0,
        12: -0.25,
        13: -0.25,
        14: -0.25,
    }
    # normalize: unit per-entry variance, 1 / sqrt(1/k + 1/(M - k)).
    scaled = dict(guiding_terms(seeds, losses, 0.5, normalize=True))
    variance = sum(c * c for c in scaled.values())
    assert variance == pytest.approx(1.0)
    # M = 1: the one candidate, coefficient exactly 1 (MeZO's z).
    assert guiding_terms([7], [0.0], 0.5) == [(7, 1.0)]
    assert guiding_terms([7], [0.0], 0.5, normalize=True) == [(7, 1.0)]
    assert greedy_terms(seeds, losses) == [(11, 1.0)]
    with pytest.raises(ValueError):
        guiding_terms([1, 2], [0.0], 0.5)
    for bad in ({"method": "best"}, {"candidates": 0}, {"elite_fraction": 1.0}):
        with pytest.raises(ValueError):
            GuidedConfig(**bad)


@pytest.mark.parametrize("method", ["gv", "greedy"])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_a_pool_of_one_is_mezo_bit_for_bit(method: str, wd: float) -> None:
    model = tiny_llama()
    reference = copy.deepcopy(model)
    guided = GuidedSPSA(_spsa(model, wd=wd), GuidedConfig(method=method, candidates=1))
    mezo = _spsa(reference, wd=wd)
    for step in range(3):
        ids = batch(step)
        seed = derive_seed(5, step)
        calls, loss = _counting(model, ids)
        got = guided.step(loss, lr=1e-2, seed=seed)
        want = mezo.step(closure_for(reference, ids), lr=1e-2, seed=seed)
        assert got.loss == want.loss and got.projected_grads == want.projected_grads
        assert (got.forward_passes, calls[0], got.z_draws) == (2, 2, 3)
        assert got.candidate_losses == [] and got.terms == [(seed, 1.0)]
        _assert_bitwise(model, reference)


def _dense_z(spsa: SPSA, seed: int) -> list[torch.Tensor]:
    return [z for _, _, z in spsa.tensor_z(seed)]


@torch.no_grad()
@pytest.mark.parametrize("method", ["gv", "greedy"])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_a_step_matches_a_dense_reference(method: str, wd: float) -> None:
    """Candidates scored at theta + eps z_i, u from their order, MeZO's step along u: as
    an independent computation with every z materialised."""
    model = tiny_llama()
    reference = copy.deepcopy(model)
    m, eps, lr = 5, 1e-3, 1e-2
    guided = GuidedSPSA(_spsa(model, eps, wd), GuidedConfig(method=method, candidates=m))
    dense = _spsa(reference, eps, wd)  # its generator only: z of a seed, dense
    params = list(reference.parameters())
    names = [n for n, _ in reference.named_parameters()]
    for step in range(2):
        ids = batch(step)
        seed = derive_seed(3, step)
        calls, loss = _counting(model, ids)
        got = guided.step(loss, lr=lr, seed=seed)
        assert calls[0] == got.forward_passes == m + 2
        seeds = [dense.perturbation_seed(seed, i) for i in range(m)]
        zs = [_dense_z(dense, s) for s in seeds]
        theta = [p.clone() for p in params]
        losses = []
        for z in zs:
            for p, t, zi in zip(params, theta, z, strict=True):
                p.copy_(t + eps * zi)
            losses.append(float(closure_for(reference, ids)()))
        assert got.candidate_losses == pytest.approx(losses, abs=1e-5)
        order = sorted(range(m), key=lambda i: losses[i])
        if method == "gv":
            k = elite_count(m, 0.5)
            coef = {i: 1 / k for i in order[:k]} | {i: -1 / (m - k) for i in order[k:]}
        else:
            coef = {i: (1.0 if i == order[0] else 0.0) for i in range(m)}
        u = [sum(coef[i] * zs[i][j] for i in range(m)) for j in range(len(params))]
        for p, t, v in zip(params, theta, u, strict=True):
            p.copy_(t + eps * v)
        plus = float(closure_for(reference, ids)())
        for p, t, v in zip(params, theta, u, strict=True):
            p.copy_(t - eps * v)
        minus = float(closure_for(reference, ids)())
        g = (plus - minus) / (2 * eps)
        assert got.projected_grads[0] == pytest.approx(g, rel=1e-3, abs=1e-3)
        assert got.loss == pytest.approx((plus + minus) / 2, abs=1e-5)
        for name, p, t, v in zip(names, params, theta, u, strict=True):
            decay = 0.0 if default_no_decay(name, p) else wd
            p.copy_(t - lr * (got.projected_grads[0] * v + decay * t))
        for (name, p), q in zip(model.named_parameters(), params, strict=True):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    ("method", "m", "wd", "draws"),
    [("gv", 4, 0.0, 20), ("gv", 2, 0.0, 10), ("gv", 4, 0.1, 24), ("greedy", 4, 0.0, 11)],
)
def test_passes_and_z_draws_are_exact(method: str, m: int, wd: float, draws: int) -> None:
    """M + 2 forwards; z drawn 2M (candidates) + M per pass along u (3 passes, 4 with
    decay and M > 1) for MeZO-GV, 2M + 3 for MeZO-Greedy: u is never stored."""
    model = tiny_llama()
    config = GuidedConfig(method=method, candidates=m)
    guided = GuidedSPSA(_spsa(model, wd=wd), config)
    calls, loss = _counting(model, batch(0))
    result = guided.step(loss, lr=1e-3, seed=1)
    assert result.forward_passes == calls[0] == config.forward_passes == m + 2
    assert result.z_draws == draws


def test_keep_direction_matches_the_seed_trick_to_rounding() -> None:
    model = tiny_llama()
    reference = copy.deepcopy(model)
    kept = GuidedSPSA(_spsa(model, wd=0.1), GuidedConfig(candidates=4, keep_direction=True))
    plain = GuidedSPSA(_spsa(reference, wd=0.1), GuidedConfig(candidates=4))
    for step in range(2):
        a = kept.step(closure_for(model, batch(step)), lr=1e-2, seed=step)
        b = plain.step(closure_for(reference, batch(step)), lr=1e-2, seed=step)
        assert a.terms == b.terms
        assert a.z_draws == 3 * 4  # 2M for the candidates, M to build u once
        assert a.projected_grads[0] == pytest.approx(b.projected_grads[0], rel=1e-3, abs=1e-3)
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)


def _quadratic(d: int, seed: int) -> tuple[torch.nn.Parameter, object, torch.Tensor]:
    """f(x) = 1/2 x^T A x - b^T x with A diagonal (eigenvalues 0.1..10), at a random x."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.logspace(-1, 1, d, dtype=torch.float64)
    b = torch.randn(d, generator=gen, dtype=torch.float64)
    x = torch.nn.Parameter(torch.randn(d, generator=gen, dtype=torch.float64))

    def loss() -> torch.Tensor:
        return 0.5 * (a * x * x).sum() - (b * x).sum()

    return x, loss, (a * x.detach() - b)


def _cos(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(torch.dot(u, v) / (u.norm() * v.norm()))


@torch.no_grad()
def _alignment(method: str, m: int, seeds: range, d: int = 2000) -> tuple[float, float]:
    """Mean over seeds of the cosine between the step's direction (oriented as the
    two-point step moves: -sign(g) u) and -grad f, and the same for one random z."""
    guided_cos, single_cos = [], []
    for s in seeds:
        x, loss, grad = _quadratic(d, s)
        spsa = SPSA([("x", x)], SPSAConfig(eps=1e-3))
        guided = GuidedSPSA(spsa, GuidedConfig(method=method, candidates=m))
        pool = guided.candidate_seeds(derive_seed(s, "pool"))
        terms = guided.terms(pool, guided.evaluate(loss, pool))
        u = sum(c * _dense_z(spsa, t)[0] for t, c in terms)
        z = _dense_z(spsa, pool[0])[0]  # MeZO's direction at this seed
        # The two-point step moves along -(u . grad) u: cosine |cos(u, grad)| with -grad.
        guided_cos.append(abs(_cos(u, grad)))
        single_cos.append(abs(_cos(z, grad)))
        if method == "gv":
            assert _cos(u, grad) < 0  # the elite lie downhill: u points down the slope
    return statistics.mean(guided_cos), statistics.mean(single_cos)


@pytest.mark.parametrize(("method", "m"), [("gv", 4), ("gv", 8), ("greedy", 4)])
def test_the_pool_direction_is_better_aligned_with_the_gradient(method: str, m: int) -> None:
    """The paper's stated property on a quadratic (d = 2000, 64 seeds): the direction a
    step moves along is better aligned with -grad f than MeZO's single random z.

    In units of 1/sqrt(d), for a noiseless loss: one z gives E|cos| = sqrt(2/pi) = 0.80;
    MeZO-GV's u = mean(top k) - mean(rest) of M gives (E[mean of the top k of M normals]
    - E[mean of the rest]) / sqrt(1/k + 1/(M - k)): 1.33 for M = 4, 2.05 for M = 8, but
    0.80 for M = 2 (u = z_best - z_worst is then sqrt(2) z in distribution: no gain);
    MeZO-Greedy's best of 4 gives about E[max of 4 normals] = 1.03. Measured with these
    seeds: single 0.86, gv M=4 1.32, gv M=8 2.16, greedy M=4 1.07 (and 0.81 at M = 2).
    """
    guided, single = _alignment(method, m, range(64))
    assert single == pytest.approx(math.sqrt(2 / (math.pi * 2000)), rel=0.2)
    assert guided > 1.15 * single, (guided, single)


@pytest.mark.parametrize("estimator", ["gv", "greedy"])
def test_hizfo_rho_zero_is_the_guided_estimator_bit_for_bit(estimator: str) -> None:
    model = tiny_llama()
    reference = copy.deepcopy(model)
    config = HiZFOConfig(
        rho=0.0, zo_lr=1e-2, zo_weight_decay=0.1, zo_estimator=estimator, zo_candidates=3
    )
    hz = HiZFO(model, config, seed=7)
    hz.profile([])
    guided = GuidedSPSA(_spsa(reference, wd=0.1), GuidedConfig(method=estimator, candidates=3))
    for step in range(3):
        ids = batch(step)
        result = hz.step(closure_for(model, ids))
        want = guided.step(closure_for(reference, ids), lr=1e-2, seed=derive_seed(7, step))
        assert (result.forward_passes, result.backward_passes) == (5, 0)
        assert result.loss == want.loss and result.projected_grads == want.projected_grads
        assert result.z_draws == want.z_draws
        _assert_bitwise(model, reference)


@pytest.mark.parametrize("estimator", ["gv", "greedy"])
def test_hizfo_with_a_pool_of_one_is_its_two_sided_self(estimator: str) -> None:
    model = tiny_llama()
    reference = copy.deepcopy(model)
    common = {"rho": 0.5, "fo_lr": 1e-3, "zo_lr": 1e-2}
    hz = HiZFO(model, HiZFOConfig(**common, zo_estimator=estimator, zo_candidates=1), seed=2)
    ref = HiZFO(reference, HiZFOConfig(**common), seed=2)
    profiling = [batch(100 + i) for i in range(2)]
    hz.profile([closure_for(model, b) for b in profiling])
    ref.profile([closure_for(reference, b) for b in profiling])
    assert hz.fo_names == ref.fo_names and hz.fo_names and hz.zo_names
    for step in range(2):
        a = hz.step(closure_for(model, batch(step)))
        b = ref.step(closure_for(reference, batch(step)))
        assert (a.loss, a.projected_grads, a.forward_passes) == (b.loss, b.projected_grads, 3)
        _assert_bitwise(model, reference)


def test_hizfo_gv_runs_both_parts_with_exact_passes() -> None:
    """rho 0.5 with MeZO-GV: 1 FO forward + backward, M + 2 ZO forwards; both parts move;
    shared_forward has no effect with a pool estimator."""
    model = tiny_llama()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = HiZFOConfig(
        rho=0.5, fo_lr=1e-3, zo_lr=1e-2, zo_estimator="gv", zo_candidates=4, shared_forward=True
    )
    hz = HiZFO(model, config, seed=0)
    hz.profile([closure_for(model, batch(100 + i)) for i in range(2)])
    calls, loss = _counting(model, batch(0))
    result = hz.step(loss)
    assert (result.forward_passes, result.backward_passes, calls[0]) == (7, 1, 7)
    assert result.z_draws == 20 and len(result.projected_grads) == 1
    assert result.zo_gain == pytest.approx(1e-2 * result.projected_grads[0] ** 2)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, start[n])}
    assert moved & set(hz.fo_names) and moved & set(hz.zo_names)
    assert all(p.grad is None for p in model.parameters())


def test_hizfo_config_checks_the_pool_settings() -> None:
    with pytest.raises(ValueError, match="zo_q must be 1"):
        HiZFOConfig(zo_estimator="gv", zo_q=2)
    with pytest.raises(ValueError, match="zo_estimator"):
        HiZFOConfig(zo_estimator="best")
    with pytest.raises(ValueError, match="candidates"):
        HiZFOConfig(zo_estimator="greedy", zo_candidates=0)
    with pytest.raises(ValueError, match="elite_fraction"):
        HiZFOConfig(zo_estimator="gv", zo_elite_fraction=1.0)
    assert HiZFOConfig(zo_estimator="greedy").guided_config().method == "greedy"
