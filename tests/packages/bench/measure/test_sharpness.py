"""Sharpness measures on quadratics with closed-form answers and on small Llamas whose
Hessian is computed densely (issue 22.5: converged, filter-normalised, fp32)."""

from __future__ import annotations

import pytest
import torch

from bench.config import ConfigError, build
from bench.measure.sharpness import (
    SharpnessConfig,
    filter_normalised,
    measure_sharpness,
    random_direction_sharpness,
    top_hessian_eigenvalue,
)


class Quadratic(torch.nn.Module):
    """L(w) = 1/2 vec(w)^T A vec(w), A = Q diag(eigs) Q^T (known spectrum), w of `shape`."""

    def __init__(self, eigs: list[float], shape: tuple[int, ...] | None = None, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        n = len(eigs)
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
        self.register_buffer("a", q @ torch.diag(torch.tensor(eigs, dtype=torch.float64)) @ q.T)
        shape = shape or (n,)
        self.w = torch.nn.Parameter(torch.randn(*shape, generator=g, dtype=torch.float64))

    def loss(self) -> torch.Tensor:
        w = self.w.flatten()
        return 0.5 * w @ self.a @ w


def test_top_eigenvalue_of_a_quadratic_converges_and_says_so():
    q = Quadratic([0.5, 1.0, 2.0, 7.0, 3.0])
    out = top_hessian_eigenvalue([q.w], q.loss, iters=300, tol=1e-9, seed=0)
    assert out["top_eigenvalue"] == pytest.approx(7.0, rel=1e-4)
    assert out["converged"] and out["iterations"] < 300  # stopped on the tolerance
    assert out["residual"] < 1e-3  # an eigenpair: ||Hv - lambda v|| / |lambda| small
    capped = top_hessian_eigenvalue([q.w], q.loss, iters=2, tol=1e-9, seed=0)
    assert not capped["converged"] and capped["iterations"] == 2 and capped["residual"] > 1e-3


def _small_llama(seed: int = 0) -> torch.nn.Module:
    """A Llama small enough for a dense Hessian (a few hundred parameters)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=12,
        hidden_size=8,
        intermediate_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=16,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).double().eval()


def test_power_iteration_matches_the_dense_hessian_of_a_small_llama():
    from torch.func import functional_call
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = _small_llama()
    ids = torch.randint(0, 12, (4, 8), generator=torch.Generator().manual_seed(1))
    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    sizes = [p.numel() for p in params]

    def flat_loss(flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, sizes)
        tensors = {n: t.view_as(p) for n, t, p in zip(names, parts, params, strict=True)}
        return functional_call(model, tensors, kwargs={"input_ids": ids, "labels": ids}).loss

    flat = torch.cat([p.detach().flatten() for p in params])
    with sdpa_kernel([SDPBackend.MATH]):  # the fused kernels have no double backward
        eigs = torch.linalg.eigvalsh(
            torch.autograd.functional.hessian(flat_loss, flat, vectorize=True)
        )
        out = top_hessian_eigenvalue(
            params, lambda: model(input_ids=ids, labels=ids).loss, iters=500, tol=1e-8, seed=0
        )
    dense = float(eigs[eigs.abs().argmax()])
    assert out["converged"]
    assert out["top_eigenvalue"] == pytest.approx(dense, rel=1e-5)


def test_directions_are_filter_normalised_and_leave_1d_tensors_alone():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(5, 3, 2) * torch.arange(1, 6).view(5, 1, 1)  # filters of different norms
    step = filter_normalised(w, 0.1, gen)
    assert torch.allclose(step.flatten(1).norm(dim=1), 0.1 * w.flatten(1).norm(dim=1))
    assert filter_normalised(torch.randn(7), 0.1, gen) is None
    q = Quadratic([1.0, 2.0, 3.0])
    out = random_direction_sharpness([q.w], q.loss, radius=0.1, directions=3, seed=0)
    assert out["rises"] == [0.0, 0.0, 0.0] and out["perturbed_tensors"] == 0


def test_random_direction_sharpness_matches_its_expectation():
    eigs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    q = Quadratic(eigs, shape=(2, 3), seed=1)
    r = 0.05
    out = random_direction_sharpness([q.w], q.loss, radius=r, directions=4000, seed=0)
    # Row i moves uniformly on a sphere of radius r ||w_i||, independently of the other:
    # E[rise] = r^2 / 2 sum_i ||w_i||^2 tr(A_ii) / 3, A_ii the 3 x 3 block of row i.
    rows = q.w.detach().norm(dim=1) ** 2
    blocks = [float(q.a[3 * i : 3 * i + 3, 3 * i : 3 * i + 3].trace()) for i in range(2)]
    expected = r**2 / 2 * sum(float(rows[i]) * blocks[i] / 3 for i in range(2))
    assert out["mean_rise"] == pytest.approx(expected, rel=0.1)
    assert out["loss"] == pytest.approx(float(q.loss().detach()))
    assert out["normalisation"] == "filter"


def test_sharper_quadratic_measures_sharper():
    flat = Quadratic([1.0] * 6, shape=(2, 3))
    sharp = Quadratic([10.0] * 6, shape=(2, 3))
    kw = dict(radius=0.1, directions=200, seed=3)
    assert (
        random_direction_sharpness([sharp.w], sharp.loss, **kw)["mean_rise"]
        > 5 * random_direction_sharpness([flat.w], flat.loss, **kw)["mean_rise"]
    )


def test_weights_flags_and_mode_are_restored_exactly():
    from helpers.tiny import tiny_llama, token_batch

    model = tiny_llama().train()
    for name, p in model.named_parameters():
        p.requires_grad_("layers.0" in name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in model.named_parameters()}
    ids = token_batch(0)
    cfg = SharpnessConfig(sharpness=True, directions=3, radius=0.05, hessian_iters=3)
    out = measure_sharpness(model, lambda m: m(input_ids=ids, labels=ids).loss, cfg)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert flags == {k: p.requires_grad for k, p in model.named_parameters()}
    assert model.training and all(p.grad is None for p in model.parameters())
    assert out["random_direction"]["mean_rise"] > 0  # a random-init model is not at a max
    assert out["hessian"]["iterations"] <= 3 and out["seconds"] > 0


def test_measured_in_fp32_without_autocast_whatever_the_trial_precision():
    from helpers.tiny import tiny_llama, token_batch

    ids = token_batch(0)
    cfg = SharpnessConfig(sharpness=True, directions=2, radius=0.05, hessian_iters=20)

    def loss_on(m):
        return m(input_ids=ids, labels=ids).loss

    bf16 = tiny_llama(dtype=torch.bfloat16)
    before = {k: v.clone() for k, v in bf16.state_dict().items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the trial's bf16-mixed context
        low = measure_sharpness(bf16, loss_on, cfg)
    assert all(v.dtype == torch.bfloat16 for v in bf16.state_dict().values())
    assert all(torch.equal(before[k], v) for k, v in bf16.state_dict().items())
    # The same weights as an fp32 model, measured plainly: the same numbers.
    fp32 = tiny_llama()
    fp32.load_state_dict({k: v.float() for k, v in before.items()})
    ref = measure_sharpness(fp32, loss_on, cfg)
    assert low["dtype"] == "float32" and low["measured_from"] == ["bfloat16"]
    # A rise is a difference of two fp32 losses near 4 (ulp 4.8e-7): equal to a few ulps
    # (summation order may differ between the two models); measured in bf16 it would be
    # a multiple of bf16's ulp at 4 (0.03), 4 orders of magnitude off.
    rises = ref["random_direction"]["rises"]
    assert low["random_direction"]["rises"] == pytest.approx(rises, rel=1e-6, abs=1e-6)
    assert low["hessian"]["top_eigenvalue"] == pytest.approx(ref["hessian"]["top_eigenvalue"])


def test_a_sample_under_64_examples_is_a_config_error():
    with pytest.raises(ConfigError, match="examples must be at least 64"):
        build(SharpnessConfig, {"examples": 4}, "measure")


def test_a_trial_measures_sharpness_when_the_suite_asks():
    from bench.spec import EvalConfig, TrainConfig, TrialSpec
    from bench.train.recipe import run_trial

    def spec(measure):
        return TrialSpec(
            method="fo-adamw",
            task="math-mini",
            model="tiny",
            seed=0,
            method_config={"lr": 1e-3},
            train=TrainConfig(steps=3, batch_size=4, max_length=64, train_examples=16, log_every=3),
            eval=EvalConfig(limit=2, batch_size=2, max_gen_toks=4),
            measure=measure,
        )

    plain = run_trial(spec(SharpnessConfig()))
    measured = run_trial(
        spec(SharpnessConfig(sharpness=True, directions=2, batch_size=32, hessian_iters=50))
    )
    assert plain["status"] == measured["status"] == "ok", measured["error"]
    assert plain.get("sharpness") is None
    s = measured["sharpness"]
    assert s["random_direction"]["mean_rise"] != 0
    assert s["hessian"]["converged"] and s["hessian"]["iterations"] < 50
    assert s["config"]["examples"] == 64  # the fixed sample, not the 16 trained on
    # Measuring changes neither the weights the test scores nor the training before it.
    assert plain["score"] == measured["score"]
    assert [p["loss"] for p in plain["curve"]] == [p["loss"] for p in measured["curve"]]
