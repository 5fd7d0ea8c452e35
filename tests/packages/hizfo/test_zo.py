"""Seeded two-point SPSA (hizfo.zo): estimator, in-place passes, fused update."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers.tiny import tiny_llama

from hizfo.zo import (
    DEFAULT_BUCKETS,
    MIN_BUCKET_NUMEL,
    SPSA,
    SPSAConfig,
    default_no_decay,
    derive_seed,
    seed_generator,
)


def lm_loss(model: torch.nn.Module, seed: int = 1, device: str = "cpu"):
    """Next-token loss on a fixed random batch, in the model's dtype (transformers' own
    loss upcasts logits to float32 only, which would cap float64 tests at fp32 accuracy)."""
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(seed)).to(device)

    def loss_fn() -> torch.Tensor:
        logits = model(input_ids=ids).logits[:, :-1]
        return torch.nn.functional.cross_entropy(logits.reshape(-1, 64), ids[:, 1:].reshape(-1))

    return loss_fn


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_params(model: torch.nn.Module, expected: dict[str, torch.Tensor], **tol) -> None:
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[name], msg=name, **tol)


class Quadratic(torch.nn.Module):
    """L(theta) = 0.5 theta^T A theta + b^T theta over two tensors, float64."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(3, 4, generator=g, dtype=torch.float64))
        self.v = torch.nn.Parameter(torch.randn(8, generator=g, dtype=torch.float64))
        m = torch.randn(20, 20, generator=g, dtype=torch.float64)
        self.register_buffer("a", m @ m.T / 20 + torch.eye(20, dtype=torch.float64))
        self.register_buffer("b", torch.randn(20, generator=g, dtype=torch.float64))

    def forward(self) -> torch.Tensor:
        theta = torch.cat([self.w.reshape(-1), self.v])
        return 0.5 * theta @ self.a @ theta + self.b @ theta


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_default_no_decay() -> None:
    assert default_no_decay("model.layers.0.input_layernorm.weight", torch.zeros(4))
    assert default_no_decay("encoder.LayerNorm.weight", torch.zeros(4, 4))
    assert default_no_decay("fc.bias", torch.zeros(4, 4))
    assert default_no_decay("scale", torch.zeros(4))
    assert not default_no_decay("model.layers.0.mlp.up_proj.weight", torch.zeros(4, 4))


def test_derive_seed_is_deterministic_and_spread() -> None:
    assert derive_seed(0, 1) == derive_seed(0, 1)
    seeds = {derive_seed(0, t) for t in range(1000)} | {derive_seed(1, t) for t in range(1000)}
    assert len(seeds) == 2000
    assert all(0 <= s < 2**63 for s in seeds)
    # Seeds use all 64 bits: a 32-bit truncation would collide here.
    assert len({s & 0xFFFFFFFF for s in seeds}) == 2000
    assert max(s >> 32 for s in seeds) > 0


def test_direction_and_device_seeds_live_in_separate_domains() -> None:
    spsa = SPSA([("p", torch.nn.Parameter(torch.zeros(4)))], SPSAConfig())
    for seed in (0, 5, 2**40 + 3):
        direction = spsa.perturbation_seed(seed, 1)
        assert direction == derive_seed(seed, "direction", 1)
        assert direction != derive_seed(seed, "device", 1)
        assert direction != derive_seed(seed, 1)


def test_cpu_generator_uses_all_64_seed_bits() -> None:
    def draw(seed: int) -> torch.Tensor:
        g = torch.Generator()
        seed_generator(g, seed)
        return torch.randn(1000, generator=g)

    # torch's own manual_seed keeps the low 32 bits only; seed_generator does not ...
    high = 7 + (1 << 40)
    plain = torch.randn(1000, generator=torch.Generator().manual_seed(high))
    assert torch.equal(plain, torch.randn(1000, generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(draw(high), draw(7))
    assert not torch.equal(draw(high), draw(high + (1 << 33)))
    # ... keeps torch's stream below 2**32, is deterministic, and still draws N(0, 1).
    assert torch.equal(draw(7), torch.randn(1000, generator=torch.Generator().manual_seed(7)))
    assert torch.equal(draw(high), draw(high))
    big = torch.cat([draw(derive_seed(3, i)) for i in range(50)])
    assert abs(float(big.mean())) < 0.02 and abs(float(big.std()) - 1) < 0.02
    with pytest.raises(ValueError):
        seed_generator(torch.Generator(), 1 << 64)


def reference_z(shapes, seed: int, dtype=torch.float64) -> list[torch.Tensor]:
    """z by its definition: one CPU generator seeded with all 64 bits, tensors in order."""
    g = torch.Generator()
    seed_generator(g, seed)
    return [torch.randn(shape, generator=g, dtype=dtype) for shape in shapes]


def test_mean_update_converges_to_true_gradient() -> None:
    # On a quadratic the central difference is exact, so each step moves theta by
    # -lr * (z . grad) z, and E[z z^T] = I makes the mean move -lr * grad. With d = 20
    # and N = 4000 directions the relative error of the mean is about
    # sqrt(d + 1) / sqrt(N) ~ 0.07; we allow 0.2 (and cosine > 0.97).
    model = Quadratic()
    theta0 = flat(model)
    with torch.enable_grad():
        model().backward()
    true_grad = torch.cat([model.w.grad.reshape(-1), model.v.grad])
    model.zero_grad(set_to_none=True)

    spsa = SPSA(model.named_parameters(), SPSAConfig(eps=1e-3))
    n = 4000
    total = torch.zeros_like(theta0)
    for seed in range(n):
        spsa.step(model, lr=1.0, seed=seed)
        total += theta0 - flat(model)
        with torch.no_grad():
            model.w.copy_(theta0[:12].view(3, 4))
            model.v.copy_(theta0[12:])
    mean = total / n
    rel_err = float((mean - true_grad).norm() / true_grad.norm())
    cosine = float(torch.nn.functional.cosine_similarity(mean, true_grad, dim=0))
    assert rel_err < 0.2, rel_err
    assert cosine > 0.97, cosine


def test_projected_grad_is_directional_derivative_float64() -> None:
    # Per seed, (L+ - L-) / (2 eps) = z . grad L + O(eps^2). The model is float64, but
    # Llama's RMSNorm computes in float32, which leaves ~1e-9 of rounding noise in the
    # loss; eps = 1e-4 balances truncation (~5e-6 here) against rounding (~1e-9 / eps).
    # Measured error: ~2e-6 relative; we allow 1e-4.
    model = tiny_llama(dtype=torch.float64)
    loss_fn = lm_loss(model)
    params = dict(model.named_parameters())
    with torch.enable_grad():
        loss_fn().backward()
    grads = {n: p.grad.clone() for n, p in params.items()}
    model.zero_grad(set_to_none=True)
    before = snapshot(model)
    spsa = SPSA(model.named_parameters(), SPSAConfig(eps=1e-4))
    for seed in range(3):
        (g,) = spsa.estimate(loss_fn, seed)
        assert_params(model, before, rtol=0, atol=1e-12)  # estimate restores
        spsa.perturb_(seed, 1.0)
        directional = sum(
            float(((params[n].detach() - before[n]) / 1e-4 * grads[n]).sum()) for n in params
        )
        spsa.perturb_(seed, -1.0)
        assert g == pytest.approx(directional, rel=1e-4, abs=1e-6)


def test_perturb_roundtrip_and_zero_lr_step_leave_parameters() -> None:
    model = tiny_llama()
    before = snapshot(model)
    spsa = SPSA(model.named_parameters(), SPSAConfig())
    spsa.perturb_(123, 1.0)
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    spsa.perturb_(123, -1.0)
    assert_params(model, before, rtol=0, atol=1e-6)

    result = spsa.step(lm_loss(model), lr=0.0, seed=7)
    assert_params(model, before, rtol=0, atol=1e-6)
    assert result.forward_passes == 2
    assert len(result.projected_grads) == 1


def test_step_leaves_global_rng_state_alone() -> None:
    model = tiny_llama()
    spsa = SPSA(model.named_parameters(), SPSAConfig(q=2))
    state = torch.get_rng_state()
    spsa.step(lm_loss(model), lr=1e-3, seed=5)
    spsa.estimate(lm_loss(model), seed=6)
    assert torch.equal(torch.get_rng_state(), state)


def naive_mezo_step(model, loss_fn, seed, *, eps, lr, wd, seeds=None) -> float:
    """MeZO as published: four regenerations of z, no fusion, fresh tensors each time."""
    params = list(model.named_parameters())

    def zs(s):
        g = torch.Generator().manual_seed(s)
        return [torch.randn(p.shape, generator=g, dtype=p.dtype) for _, p in params]

    with torch.no_grad():
        for (_, p), z in zip(params, zs(seed), strict=True):
            p.data = p.data + eps * z
        loss_plus = float(loss_fn())
        for (_, p), z in zip(params, zs(seed), strict=True):
            p.data = p.data - 2 * eps * z
        loss_minus = float(loss_fn())
        for (_, p), z in zip(params, zs(seed), strict=True):
            p.data = p.data + eps * z
        g = (loss_plus - loss_minus) / (2 * eps)
        for (name, p), z in zip(params, zs(seed), strict=True):
            decay = 0.0 if default_no_decay(name, p) else wd
            p.data = p.data - lr * (g * z + decay * p.data)
    return g


def test_fused_step_matches_naive_mezo_with_weight_decay() -> None:
    # float64, so that rounding differences between the fused and the naive passes
    # (amplified by 1 / (2 eps) in the projected gradient) stay far below the tolerance.
    model = tiny_llama(dtype=torch.float64)
    reference = copy.deepcopy(model)
    spsa = SPSA(model.named_parameters(), SPSAConfig(eps=1e-3, weight_decay=0.1))
    for seed in (11, 12):
        result = spsa.step(lm_loss(model, seed), lr=1e-2, seed=seed)
        g = naive_mezo_step(reference, lm_loss(reference, seed), seed, eps=1e-3, lr=1e-2, wd=0.1)
        assert result.projected_grads[0] == pytest.approx(g, rel=1e-8, abs=1e-8)
        assert_params(model, snapshot(reference), rtol=0, atol=1e-12)


def test_weight_decay_skips_norms_and_biases() -> None:
    model = tiny_llama()
    model.model.layers[0].mlp.up_proj.bias = torch.nn.Parameter(torch.ones(64))
    before = snapshot(model)
    spsa = SPSA(model.named_parameters(), SPSAConfig(weight_decay=0.5))
    # Zero projected gradient, nothing to restore: only the decay acts.
    spsa.restore_and_update_(3, 0.0, lr=0.1, restore_scale=0.0)
    for name, p in model.named_parameters():
        factor = 1.0 if default_no_decay(name, p) else 1.0 - 0.1 * 0.5
        torch.testing.assert_close(p.detach(), before[name] * factor, msg=name)
    assert "model.layers.0.mlp.up_proj.bias" in spsa.names


def test_q_directions_are_averaged_at_the_same_point() -> None:
    model = tiny_llama(dtype=torch.float64)
    theta0 = snapshot(model)
    loss_fn = lm_loss(model)
    spsa = SPSA(model.named_parameters(), SPSAConfig(q=3, weight_decay=0.1))
    grads = spsa.estimate(loss_fn, seed=9)
    assert len(grads) == 3 and len(set(grads)) == 3
    result = spsa.step(loss_fn, lr=1e-2, seed=9)
    assert result.projected_grads == pytest.approx(grads, rel=1e-8)
    assert result.forward_passes == 6

    expected = {n: t.clone() for n, t in theta0.items()}
    for i, g in enumerate(grads):
        seed = 9 if i == 0 else derive_seed(9, "direction", i)
        zs = reference_z([t.shape for t in theta0.values()], seed)
        for (name, _), z in zip(theta0.items(), zs, strict=True):
            expected[name] -= 1e-2 * g / 3 * z
    for name, t in theta0.items():
        if not default_no_decay(name, t):
            expected[name] -= 1e-2 * 0.1 * t
    assert_params(model, expected, rtol=0, atol=1e-12)


def test_buffer_is_reused_and_sized_for_the_largest_bucket() -> None:
    model = tiny_llama()
    spsa = SPSA(model.named_parameters(), SPSAConfig())
    ((key, buffer),) = spsa._buffers.items()
    assert key == (torch.device("cpu"), torch.float32)
    assert buffer.numel() == max(b.numel for b in spsa.buckets) <= spsa.bucket_numel
    assert spsa.bucket_numel == max(MIN_BUCKET_NUMEL, -(-spsa.numel // DEFAULT_BUCKETS))
    ptr = buffer.data_ptr()
    spsa.step(lm_loss(model), lr=1e-3, seed=0)
    assert spsa._buffers[key].data_ptr() == ptr


def test_tied_tensor_is_perturbed_once() -> None:
    p = torch.nn.Parameter(torch.zeros(5))
    spsa = SPSA([("a", p), ("b", p)], SPSAConfig(eps=1.0))
    assert spsa.names == ["a"]
    spsa.perturb_(0, 1.0)
    torch.testing.assert_close(
        p.detach(), torch.randn(5, generator=torch.Generator().manual_seed(0))
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_step_applies_the_spsa_update(dtype: torch.dtype) -> None:
    # The update lr g z is made 30x larger than the weights' rounding step, and the
    # result must match the update computed in float64 from the same z and the measured
    # projected gradient, to a couple of rounding steps (rounding drift alone, which
    # the perturb/restore passes cause anyway, moves each weight by about one).
    layer = torch.nn.Linear(8, 4).to(dtype)
    theta0 = {n: p.detach().double().clone() for n, p in layer.named_parameters()}
    x = torch.randn(3, 8, dtype=dtype)
    spsa = SPSA(layer.named_parameters(), SPSAConfig(eps=1e-2))
    result = spsa.step(lambda: layer(x).float().pow(2).mean(), lr=1.0, seed=3)
    (g,) = result.projected_grads
    assert layer.weight.dtype == dtype and layer.bias.dtype == dtype
    zs = reference_z([t.shape for t in theta0.values()], 3, dtype=dtype)
    ulp = 2.0 ** (-8 if dtype == torch.bfloat16 else -11)  # relative rounding step
    for (name, t0), z in zip(theta0.items(), zs, strict=True):
        expected = t0 - g * z.double()
        got = dict(layer.named_parameters())[name].detach().double()
        moved = (expected - t0).abs()
        assert float(moved.mean()) > 30 * ulp * float(t0.abs().mean()), name
        tol = 3 * ulp * (t0.abs() + moved) + 1e-6
        assert bool(((got - expected).abs() <= tol).all()), name


def test_generator_device_draws_the_defined_z() -> None:
    # generator_device="cpu" must give z by its definition (a CPU generator, tensors in
    # order, chunked or not) whatever the parameters' device; here checked against an
    # explicit draw. The cross-device half runs on a GPU (test below).
    model = tiny_llama(dtype=torch.float64)
    before = snapshot(model)
    SPSA(
        model.named_parameters(), SPSAConfig(eps=1.0), generator_device="cpu", chunk_numel=64
    ).perturb_(2**40 + 4, 1.0)
    zs = reference_z([t.shape for t in before.values()], 2**40 + 4)
    expected = {n: t + z for (n, t), z in zip(before.items(), zs, strict=True)}
    assert_params(model, expected, rtol=0, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_generator_device_gives_cpu_z_on_cuda() -> None:
    cpu, gpu = tiny_llama(), tiny_llama().cuda()
    SPSA(cpu.named_parameters(), SPSAConfig()).perturb_(4, 1.0)
    SPSA(gpu.named_parameters(), SPSAConfig(), generator_device="cpu").perturb_(4, 1.0)
    assert_params(copy.deepcopy(gpu).cpu(), snapshot(cpu), rtol=0, atol=0)  # .cpu() is in place
    other = tiny_llama().cuda()
    SPSA(other.named_parameters(), SPSAConfig()).perturb_(4, 1.0)  # CUDA's own stream
    assert any(
        not torch.equal(a, b) for a, b in zip(other.parameters(), gpu.parameters(), strict=True)
    )


def test_invalid_config() -> None:
    with pytest.raises(ValueError, match="eps"):
        SPSAConfig(eps=0.0)
    with pytest.raises(ValueError, match="q"):
        SPSAConfig(q=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_generators_live_on_the_parameter_device() -> None:
    model = tiny_llama().cuda()
    before = snapshot(model)
    spsa = SPSA(model.named_parameters(), SPSAConfig())
    assert all(g.device.type == "cuda" for g in spsa._generators.values())
    state = torch.cuda.get_rng_state()
    spsa.step(lm_loss(model, device="cuda"), lr=0.0, seed=1)
    assert torch.equal(torch.cuda.get_rng_state(), state)
    assert_params(model, before, rtol=0, atol=1e-6)


def test_probe_is_the_two_point_estimate_and_restores() -> None:
    model = tiny_llama()
    loss_fn = lm_loss(model)
    before = snapshot(model)
    spsa = SPSA(model.named_parameters(), SPSAConfig(eps=1e-3))
    probe = spsa.probe(loss_fn, 5)
    assert_params(model, before, rtol=0, atol=1e-6)
    assert probe.projected_grad == (probe.loss_plus - probe.loss_minus) / 2e-3
    assert probe.loss == (probe.loss_plus + probe.loss_minus) / 2
    spsa.perturb_(5, 1.0)
    assert float(loss_fn()) == pytest.approx(probe.loss_plus, abs=1e-6)
    spsa.perturb_(5, -1.0)

    # restore=False stops at theta - eps z (for a fused restore-and-update), one pass fewer.
    draws = spsa.draws
    again = spsa.probe(loss_fn, 5, restore=False)
    assert spsa.draws - draws == 2
    assert float(loss_fn()) == pytest.approx(again.loss_minus, abs=1e-6)
    assert again.projected_grad == pytest.approx(probe.projected_grad, rel=1e-3)
    spsa.restore_and_update_(5, again.projected_grad, lr=0.0)
    assert_params(model, before, rtol=0, atol=1e-6)


DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
        ],
    ),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
def test_tensor_z_yields_the_z_of_a_pass_one_tensor_at_a_time(distribution, device) -> None:
    """tensor_z gives, per tensor, exactly what perturb_ adds (chunked draws included),
    as new tensors, in one draw."""
    shapes = [(70,), (5, 9), (33,), (3, 2, 4)]
    zeros = [(f"t{i}", torch.zeros(s, device=device)) for i, s in enumerate(shapes)]
    others = [(f"t{i}", torch.full(s, 2.0, device=device)) for i, s in enumerate(shapes)]
    # eps = 1 on zero tensors: perturb_(seed, 1) leaves exactly z in them.
    reference = SPSA(zeros, SPSAConfig(eps=1.0), chunk_numel=32, distribution=distribution)
    reference.perturb_(11, 1.0)
    spsa = SPSA(others, SPSAConfig(), chunk_numel=32, distribution=distribution)
    yielded = list(spsa.tensor_z(11))
    assert spsa.draws == 1
    assert [name for name, _, _ in yielded] == [name for name, _ in others]
    for (_, param, z), (_, expected), (_, original) in zip(yielded, zeros, others, strict=True):
        assert param is original
        assert torch.equal(z, expected)
        assert z.data_ptr() != expected.data_ptr()
    assert len({z.data_ptr() for _, _, z in yielded}) == len(shapes)  # a new tensor each
    assert all(torch.equal(p, torch.full_like(p, 2.0)) for _, p in others)  # untouched
