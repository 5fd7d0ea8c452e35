"""Sharpness measures on a quadratic whose answers are known in closed form."""

from __future__ import annotations

import pytest
import torch

from bench.measure.sharpness import (
    SharpnessConfig,
    measure_sharpness,
    random_direction_sharpness,
    top_hessian_eigenvalue,
)


class Quadratic(torch.nn.Module):
    """L(w) = 1/2 w^T A w with A = Q diag(eigs) Q^T (known spectrum), one tensor w."""

    def __init__(self, eigs: list[float], seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        n = len(eigs)
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
        self.register_buffer("a", q @ torch.diag(torch.tensor(eigs, dtype=torch.float64)) @ q.T)
        self.w = torch.nn.Parameter(torch.randn(n, generator=g, dtype=torch.float64))

    def loss(self) -> torch.Tensor:
        return 0.5 * self.w @ self.a @ self.w


def test_top_eigenvalue_of_a_quadratic():
    q = Quadratic([0.5, 1.0, 2.0, 7.0, 3.0])
    out = top_hessian_eigenvalue([q.w], q.loss, iters=300, tol=1e-9, seed=0)
    assert out["top_eigenvalue"] == pytest.approx(7.0, rel=1e-4)
    assert out["iterations"] < 300  # stopped on the tolerance


def test_random_direction_sharpness_matches_its_expectation():
    eigs = [1.0, 2.0, 3.0, 4.0]
    q = Quadratic(eigs, seed=1)
    r = 0.05
    out = random_direction_sharpness([q.w], q.loss, radius=r, directions=4000, seed=0)
    # E[L(w + r d) - L(w)] = r^2 / 2 * ||w||^2 * tr(A) / n for d uniform on the sphere ||w||.
    expected = r**2 / 2 * float(q.w.detach().norm() ** 2) * sum(eigs) / len(eigs)
    assert out["mean_rise"] == pytest.approx(expected, rel=0.1)
    assert out["loss"] == pytest.approx(float(q.loss().detach()))


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
    assert out["hessian"]["iterations"] == 3 and out["seconds"] > 0


def test_sharper_quadratic_measures_sharper():
    flat, sharp = Quadratic([1.0, 1.0, 1.0]), Quadratic([10.0, 10.0, 10.0])
    kw = dict(radius=0.1, directions=200, seed=3)
    assert (
        random_direction_sharpness([sharp.w], sharp.loss, **kw)["mean_rise"]
        > 5 * random_direction_sharpness([flat.w], flat.loss, **kw)["mean_rise"]
    )


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
    measured = run_trial(spec(SharpnessConfig(sharpness=True, directions=2, hessian_iters=2)))
    assert plain["status"] == measured["status"] == "ok", measured["error"]
    assert plain.get("sharpness") is None
    s = measured["sharpness"]
    assert s["random_direction"]["mean_rise"] != 0 and s["hessian"]["iterations"] == 2
    # Measuring changes neither the weights the test scores nor the training before it.
    assert plain["score"] == measured["score"]
    assert [p["loss"] for p in plain["curve"]] == [p["loss"] for p in measured["curve"]]
