"""The shared AdamW set-up (hizfo.adamw)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers.tiny import closure_for, tiny_llama, token_batch

from hizfo.adamw import (
    AdamWConfig,
    BucketedAdamW,
    build_adamw,
    clip_gradients,
    lr_multiplier,
    param_groups,
    set_lr,
)


def test_lr_multiplier_shapes() -> None:
    # Warmup 2 of 10 steps, then 8 steps of decay.
    assert [lr_multiplier(t, 10, 2, "constant") for t in range(4)] == [0.5, 1.0, 1.0, 1.0]
    linear = [lr_multiplier(t, 10, 2, "linear") for t in range(10)]
    assert linear[:3] == [0.5, 1.0, 1.0] and linear[2:] == pytest.approx(
        [1 - k / 8 for k in range(8)]
    )
    cosine = [lr_multiplier(t, 10, 0, "cosine") for t in range(11)]
    assert cosine[0] == 1.0 and cosine[5] == pytest.approx(0.5) and cosine[10] == 0.0
    assert cosine[2] == pytest.approx((1 + math.cos(math.pi * 0.2)) / 2)
    assert all(a >= b for a, b in zip(cosine, cosine[1:], strict=False))
    assert lr_multiplier(50, 10, 0, "linear") == 0.0  # past the end: clipped, not negative
    assert lr_multiplier(3, None, 0, "constant") == 1.0
    with pytest.raises(ValueError, match="total"):
        lr_multiplier(3, None, 0, "linear")
    with pytest.raises(ValueError, match="schedule"):
        lr_multiplier(3, 10, 0, "step")


def test_param_groups_exempt_norms_and_biases_and_dedupe_ties() -> None:
    model = tiny_llama(tie=True)
    model.model.layers[0].mlp.up_proj.bias = torch.nn.Parameter(torch.zeros(64))
    named = list(model.named_parameters(remove_duplicate=False))
    decay, exempt = param_groups(named, 0.1)
    assert decay["weight_decay"] == 0.1 and exempt["weight_decay"] == 0.0
    ids = [id(p) for g in (decay, exempt) for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    exempt_ids = {id(p) for p in exempt["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in exempt_ids) == (p.ndim == 1), name
    assert param_groups([("norm.weight", torch.zeros(3))], 0.1)[0]["weight_decay"] == 0.0


def test_build_adamw_with_schedule_matches_torch_adamw_and_lambdalr() -> None:
    a, b = tiny_llama(), tiny_llama()
    cfg = AdamWConfig(
        lr=1e-2,
        weight_decay=0.1,
        schedule="cosine",
        warmup_steps=2,
        max_grad_norm=0.5,
        betas=(0.8, 0.99),
    )
    ours = build_adamw(list(a.named_parameters()), cfg)
    groups = param_groups(list(b.named_parameters()), 0.1)
    ref = torch.optim.AdamW(groups, lr=1e-2, betas=(0.8, 0.99))
    total = 6
    sched = torch.optim.lr_scheduler.LambdaLR(ref, lambda s: lr_multiplier(s, total, 2, "cosine"))
    for step in range(total):
        ids = token_batch(step)
        for model, opt in ((a, ours), (b, ref)):
            closure_for(model, ids)().backward()
            if opt is ours:
                clip_gradients(model.parameters(), cfg)
                set_lr(ours, cfg, step, total)
            else:
                torch.nn.utils.clip_grad_norm_(list(model.parameters()), 0.5)
            opt.step()
            opt.zero_grad(set_to_none=True)
        sched.step()
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(pa, pb, rtol=0, atol=1e-7)


def test_invalid_config() -> None:
    for bad in (
        {"schedule": "step"},
        {"warmup_steps": -1},
        {"max_grad_norm": 0.0},
        {"lr": -1.0},
        {"eps": 0.0},
    ):
        with pytest.raises(ValueError):
            AdamWConfig(**bad)
    assert AdamWConfig(betas=[0.9, 0.95]).betas == (0.9, 0.95)


def _train(implementation: str, steps: int = 4) -> list[torch.Tensor]:
    model = tiny_llama()
    cfg = AdamWConfig(lr=1e-2, weight_decay=0.1, implementation=implementation)
    optimizer = build_adamw(model.named_parameters(), cfg)
    for t in range(steps):
        closure_for(model, token_batch(t))().backward()
        clip_gradients(model.parameters(), AdamWConfig(max_grad_norm=0.1))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return [p.detach().clone() for p in model.parameters()]


def test_foreach_adamw_is_the_loop_bit_for_bit_and_fused_is_close() -> None:
    auto, foreach, fused = _train("auto"), _train("foreach"), _train("fused")
    assert all(torch.equal(a, b) for a, b in zip(auto, foreach, strict=True))
    for a, b in zip(auto, fused, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="implementation"):
        AdamWConfig(implementation="apex")


def test_clipping_and_foreach_adamw_cost_no_call_per_tensor() -> None:
    from test_zo_buckets import OpCounter

    counts = []
    for n in (4, 32):
        params = [torch.nn.Parameter(torch.ones(64, 8)) for _ in range(n)]
        cfg = AdamWConfig(implementation="foreach", max_grad_norm=0.5)
        optimizer = build_adamw([(f"w{i}", p) for i, p in enumerate(params)], cfg)
        for _ in range(2):  # the first step creates the state, tensor by tensor
            for p in params:
                p.grad = torch.ones_like(p)
            with OpCounter() as counter:
                clip_gradients(params, cfg)
                optimizer.step()
        # torch reads each tensor's step count on the host (a scalar, no kernel).
        host_reads = counter.calls.pop("_local_scalar_dense")
        assert host_reads == 2 * n + 1  # two per tensor, and the clipping norm
        counts.append(dict(counter.calls))
    assert counts[0] == counts[1]
    assert sum(counts[0].values()) < 25


def _two_models_trained(steps: int, carry_over_at: int | None = None) -> tuple[list, list]:
    """The tiny model trained by torch's loop and by BucketedAdamW (small buckets, so
    there are several), with weight decay, one tensor without a gradient every other
    step (its count falls behind) and, at `carry_over_at`, both optimizers rebuilt with
    their state carried over (as Hi-ZFO does when its FO set changes)."""
    models = [tiny_llama(), tiny_llama()]
    loop_cfg = AdamWConfig(lr=1e-2, weight_decay=0.1, implementation="loop")

    def build(i: int, model: torch.nn.Module) -> torch.optim.AdamW:
        if i == 0:
            return build_adamw(model.named_parameters(), loop_cfg)
        groups = param_groups(model.named_parameters(), 0.1)
        return BucketedAdamW(groups, lr=1e-2, bucket_numel=2048)

    optimizers = [build(i, m) for i, m in enumerate(models)]
    for t in range(steps):
        if t == carry_over_at:
            rebuilt = [build(i, m) for i, m in enumerate(models)]
            for old, new in zip(optimizers, rebuilt, strict=True):
                for p, state in old.state.items():
                    new.state[p] = state
            optimizers = rebuilt
        for model, optimizer in zip(models, optimizers, strict=True):
            closure_for(model, token_batch(t))().backward()
            clip_gradients(model.parameters(), AdamWConfig(max_grad_norm=0.1))
            if t % 2:
                model.lm_head.weight.grad = None
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return models, optimizers


def test_bucketed_adamw_is_torchs_loop_bit_for_bit() -> None:
    (loop, bucketed), (loop_opt, bucketed_opt) = _two_models_trained(5, carry_over_at=3)
    assert len(bucketed_opt._buckets(bucketed_opt.param_groups[0])) == 0  # no grads now
    for (name, a), b in zip(loop.named_parameters(), bucketed.parameters(), strict=True):
        assert torch.equal(a, b), name
    loop_state, bucketed_state = loop_opt.state_dict(), bucketed_opt.state_dict()
    no_lr0 = [{k: v for k, v in g.items() if k != "initial_lr"} for g in loop_state["param_groups"]]
    assert no_lr0 == bucketed_state["param_groups"]
    for k, s in loop_state["state"].items():
        other = bucketed_state["state"][k]
        assert set(s) == set(other) and all(torch.equal(s[x], other[x]) for x in s), k
    # lm_head had no gradient at steps 1 and 3: its count fell behind the others'.
    assert float(bucketed_opt.state[bucketed.lm_head.weight]["step"]) == 3.0
    assert float(bucketed_opt.state[bucketed.model.norm.weight]["step"]) == 5.0


def test_bucketed_adamw_resumes_from_torchs_state_dict() -> None:
    (loop, bucketed), (loop_opt, _) = _two_models_trained(3)
    resumed = BucketedAdamW(param_groups(loop.named_parameters(), 0.1), lr=1e-2)
    # Deep copies: load_state_dict keeps the tensors it is given (same device and dtype).
    resumed.load_state_dict(copy.deepcopy(loop_opt.state_dict()))
    reference = build_adamw(
        bucketed.named_parameters(), AdamWConfig(lr=1e-2, weight_decay=0.1, implementation="loop")
    )
    reference.load_state_dict(copy.deepcopy(loop_opt.state_dict()))
    for optimizer, model in ((resumed, loop), (reference, bucketed)):
        for t in (3, 4):
            closure_for(model, token_batch(t))().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    assert all(
        torch.equal(a, b) for a, b in zip(loop.parameters(), bucketed.parameters(), strict=True)
    )
    with pytest.raises(ValueError, match="amsgrad"):
        BucketedAdamW([torch.nn.Parameter(torch.ones(3))], amsgrad=True)


def test_bucketed_adamw_costs_operator_calls_per_bucket_not_per_tensor() -> None:
    from test_zo_buckets import OpCounter

    counts = []
    for n in (4, 32, 256):  # the same 65536 elements as 4, 32 or 256 tensors
        params = [torch.nn.Parameter(torch.ones(65536 // n // 8, 8)) for _ in range(n)]
        optimizer = build_adamw(
            [(f"w{i}", p) for i, p in enumerate(params)], AdamWConfig(weight_decay=0.1)
        )
        assert isinstance(optimizer, BucketedAdamW)
        for _ in range(2):  # the first step creates the state, tensor by tensor
            for p in params:
                p.grad = torch.ones_like(p)
            with OpCounter() as counter:
                optimizer.step()
        counts.append(dict(counter.calls))
    assert counts[0] == counts[1] == counts[2]
    assert sum(counts[0].values()) <= 12  # one bucket: nine foreach calls and the hooks
