"""SPSA options (hizfo.zo): keep_z, Rademacher directions, the one-sided estimator, draw
counts, and what low-precision weights do to perturb/restore and to small updates."""

from __future__ import annotations

import pytest
import torch
from helpers.tiny import tiny_llama
from test_zo import Quadratic, flat, lm_loss, reference_z

from hizfo.zo import SPSA, SPSAConfig


def true_grad(model: Quadratic) -> torch.Tensor:
    with torch.enable_grad():
        model().backward()
    g = torch.cat([model.w.grad.reshape(-1), model.v.grad])
    model.zero_grad(set_to_none=True)
    return g


def reset(model: Quadratic, theta0: torch.Tensor) -> None:
    with torch.no_grad():
        model.w.copy_(theta0[:12].view(3, 4))
        model.v.copy_(theta0[12:])


@pytest.mark.parametrize("q", [1, 2])
def test_keep_z_gives_the_default_update_with_one_draw_per_direction(q: int) -> None:
    a, b = tiny_llama(), tiny_llama()
    plain = SPSA(a.named_parameters(), SPSAConfig(q=q, weight_decay=0.1))
    kept = SPSA(b.named_parameters(), SPSAConfig(q=q, weight_decay=0.1), keep_z=True)
    for seed in (3, 2**40 + 1):
        ra = plain.step(lm_loss(a), lr=1e-2, seed=seed)
        rb = kept.step(lm_loss(b), lr=1e-2, seed=seed)
        assert rb.projected_grads == pytest.approx(ra.projected_grads, rel=1e-4, abs=1e-5)
        assert (ra.z_draws, rb.z_draws) == (4 * q - 1, 1 if q == 1 else 2 * q - 1)
        for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(pb, pa, rtol=0, atol=1e-6, msg=name)
    assert plain.step(lm_loss(a), lr=0.0, seed=9).z_draws == 4 * q - 1
    assert kept.step(lm_loss(b), lr=0.0, seed=9).z_draws == (1 if q == 1 else 2 * q - 1)
    # z kept as one buffer per bucket: one more copy of the perturbed tensors.
    assert [k.numel() for k in kept._kept] == [b.numel for b in kept.buckets]
    assert sum(k.numel() for k in kept._kept) == kept.numel
    kept.release_z()
    assert kept._kept == [] and not any(v.kept for v in kept._views.values())


def test_rademacher_entries_are_signs_and_chunking_keeps_them() -> None:
    p = torch.nn.Parameter(torch.zeros(1000))
    q = torch.nn.Parameter(torch.zeros(1000))
    SPSA([("p", p)], SPSAConfig(eps=1.0), distribution="rademacher").perturb_(2**35 + 1, 1.0)
    SPSA([("q", q)], SPSAConfig(eps=1.0), distribution="rademacher", chunk_numel=48).perturb_(
        2**35 + 1, 1.0
    )
    assert set(p.detach().unique().tolist()) == {-1.0, 1.0}
    assert abs(float(p.detach().mean())) < 0.1
    assert torch.equal(p, q)
    # Not the Gaussian stream's signs, and a different seed gives different signs.
    r = torch.nn.Parameter(torch.zeros(1000))
    SPSA([("r", r)], SPSAConfig(eps=1.0), distribution="rademacher").perturb_(2**35 + 2, 1.0)
    assert not torch.equal(p, r)
    with pytest.raises(ValueError, match="distribution"):
        SPSA([("p", p)], SPSAConfig(), distribution="uniform")


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
def test_mean_update_matches_the_gradient(distribution: str) -> None:
    # E[z z^T] = I for both, so the mean of g z over seeds is the gradient; with d = 20
    # and N = 3000 the relative error of the mean is about sqrt(d / N) ~ 0.08.
    model = Quadratic()
    theta0, grad = flat(model), true_grad(model)
    spsa = SPSA(model.named_parameters(), SPSAConfig(eps=1e-3), distribution=distribution)
    total = torch.zeros_like(theta0)
    n = 3000
    for seed in range(n):
        spsa.step(model, lr=1.0, seed=seed)
        total += theta0 - flat(model)
        reset(model, theta0)
    mean = total / n
    assert float((mean - grad).norm() / grad.norm()) < 0.2
    assert float(torch.nn.functional.cosine_similarity(mean, grad, dim=0)) > 0.97


def test_one_sided_estimate_on_a_quadratic() -> None:
    # On L = 0.5 t^T A t + b^T t: one-sided g1 = z.grad + (eps / 2) z^T A z exactly,
    # two-sided g2 = z.grad; so per seed g1 - g2 = (eps / 2) z^T A z, and over seeds the
    # mean of g1 - g2 tends to (eps / 2) tr(A) (the O(eps) bias of the projected
    # gradient), with standard deviation (eps / 2) sqrt(2 tr(A^2) / N).
    eps = 0.05
    model = Quadratic()
    a = model.a
    theta0 = flat(model)
    one = SPSA(model.named_parameters(), SPSAConfig(eps=eps, estimator="one-sided"))
    two = SPSA(model.named_parameters(), SPSAConfig(eps=eps))
    diffs = []
    n = 2000
    for seed in range(n):
        (g1,) = one.estimate(model, seed)
        (g2,) = two.estimate(model, seed)
        z = torch.cat([t.reshape(-1) for t in reference_z([(3, 4), (8,)], seed)])
        assert g1 - g2 == pytest.approx(eps / 2 * float(z @ a @ z), rel=1e-6, abs=1e-9)
        diffs.append(g1 - g2)
    torch.testing.assert_close(flat(model), theta0, rtol=0, atol=1e-12)  # restored
    mean = sum(diffs) / n
    sigma = eps / 2 * float((2 * torch.trace(a @ a) / n).sqrt())
    assert mean == pytest.approx(eps / 2 * float(torch.trace(a)), abs=4 * sigma)


def test_one_sided_step_uses_the_given_loss_and_one_forward() -> None:
    model = Quadratic()
    theta0 = flat(model)
    loss0 = float(model().detach())
    calls = []

    def loss_fn() -> torch.Tensor:
        calls.append(1)
        return model()

    spsa = SPSA(model.named_parameters(), SPSAConfig(eps=1e-3, estimator="one-sided"))
    result = spsa.step(loss_fn, lr=0.1, seed=4, loss_at_theta=loss0)
    assert (len(calls), result.forward_passes, result.z_draws) == (1, 1, 2)
    assert result.loss == loss0
    z = torch.cat([t.reshape(-1) for t in reference_z([(3, 4), (8,)], 4)])
    reset(model, theta0 + 1e-3 * z)
    (g,) = result.projected_grads
    assert g == pytest.approx((float(model()) - loss0) / 1e-3, rel=1e-9)
    reset(model, theta0)
    spsa.step(model, lr=0.1, seed=4)  # no loss given: computed, one more forward
    torch.testing.assert_close(flat(model), theta0 - 0.1 * g * z, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="one-sided"):
        SPSA(model.named_parameters(), SPSAConfig()).step(model, 0.1, 1, loss_at_theta=1.0)


def cycles(params: list[torch.nn.Parameter], n: int = 50) -> None:
    spsa = SPSA([(f"p{i}", p) for i, p in enumerate(params)], SPSAConfig(eps=1e-3))
    for seed in range(n):
        spsa.perturb_(seed, 1.0)
        spsa.perturb_(seed, -2.0)
        spsa.restore_and_update_(seed, 0.0, lr=0.0)


def test_fp32_master_weights_are_unaffected_by_bf16_autocast() -> None:
    # bf16-mixed keeps fp32 weights and runs the model under autocast: the SPSA passes
    # are in-place adds, which autocast leaves in fp32, so 50 perturb/restore cycles
    # under autocast are bit-identical to the same cycles without it, and end within a
    # few fp32 rounding steps of the start. (Not bit-exact: fl(fl(t + d) - d) != t for
    # most elements; measured after 50 cycles: ~90% of elements off by ~1 ulp, max
    # |drift| ~1e-7, mean ~5e-9, on N(0, 0.02) weights.)
    torch.manual_seed(0)
    start = torch.randn(100_000) * 0.02
    plain = torch.nn.Parameter(start.clone())
    mixed = torch.nn.Parameter(start.clone())
    cycles([plain])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cycles([mixed])
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, plain)
    drift = (plain.detach() - start).abs()
    assert float(drift.max()) < 1e-6 and float(drift.mean()) < 2e-8


def test_pure_bf16_weights_drift_and_lose_small_updates() -> None:
    # Why pure bf16 is for memory studies only. Measured on N(0, 0.02) weights:
    # 50 perturb/restore cycles leave ~90% of bf16 elements changed (max |drift| ~7e-3,
    # mean ~3e-4, i.e. about one bf16 step per element), and an lr g z update of ~1e-5
    # changes ~12% of bf16 elements in all, only those near zero, and none with
    # |w| > 0.01 (half a bf16 step there is >= 3e-5), against ~100% of fp32 ones.
    torch.manual_seed(0)
    start = torch.randn(100_000) * 0.02
    bf16 = torch.nn.Parameter(start.to(torch.bfloat16))
    fp32 = torch.nn.Parameter(start.clone())
    before_bf16 = bf16.detach().clone()
    cycles([bf16])
    cycles([fp32])
    bf16_drift = (bf16.detach().float() - before_bf16.float()).abs()
    fp32_drift = (fp32.detach() - start).abs()
    assert float((bf16.detach() != before_bf16).float().mean()) > 0.5
    assert float(bf16_drift.mean()) > 100 * float(fp32_drift.mean())

    fresh = {
        torch.bfloat16: torch.nn.Parameter(start.to(torch.bfloat16)),
        torch.float32: torch.nn.Parameter(start.clone()),
    }
    changed, changed_large = {}, {}
    large = start.abs() > 0.01
    for dtype, p in fresh.items():
        before = p.detach().clone()
        spsa = SPSA([("p", p)], SPSAConfig(eps=1e-3))
        spsa.restore_and_update_(11, 1e-2, lr=1e-3, restore_scale=0.0)  # lr g z ~ 1e-5
        moved = p.detach() != before
        changed[dtype] = float(moved.float().mean())
        changed_large[dtype] = float(moved[large].float().mean())
    assert changed[torch.bfloat16] < 0.2 and changed_large[torch.bfloat16] < 0.001
    assert changed[torch.float32] > 0.99 and changed_large[torch.float32] > 0.99


def test_two_sided_draw_counts() -> None:
    model = tiny_llama()
    for q, draws in ((1, 3), (3, 11)):
        spsa = SPSA(model.named_parameters(), SPSAConfig(q=q))
        assert spsa.step(lm_loss(model), lr=0.0, seed=1).z_draws == draws
