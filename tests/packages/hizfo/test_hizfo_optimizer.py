"""The hybrid Hi-ZFO step (hizfo.optimizer) and its importance profiling."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers.tiny import closure_for, tiny_llama
from helpers.tiny import token_batch as batch

import hizfo.optimizer
from hizfo import SPSA, HiZFO, HiZFOConfig, SPSAConfig, profile_importance, select_fo_tensors
from hizfo.zo import default_no_decay, derive_seed, seed_generator


def params_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_same_params(a: torch.nn.Module, b: torch.nn.Module, atol: float = 1e-6) -> None:
    expected = params_of(b)
    for name, p in a.named_parameters():
        torch.testing.assert_close(p.detach(), expected[name], rtol=0, atol=atol, msg=name)


def profiled(model: torch.nn.Module, config: HiZFOConfig, seed: int = 0) -> HiZFO:
    hz = HiZFO(model, config, seed=seed)
    hz.profile([closure_for(model, batch(100 + i)) for i in range(2)])
    return hz


def test_profile_importance_scores_and_leaves_no_trace() -> None:
    model = tiny_llama()
    frozen = model.model.layers[0].mlp.up_proj.weight
    frozen.requires_grad_(False)
    closures = [closure_for(model, batch(i)) for i in range(2)]
    scores = {m: profile_importance(model, closures, method=m) for m in ("taylor", "grad_norm")}
    names = [n for n, _ in model.named_parameters()]
    for s in scores.values():
        assert list(s) == names
        assert max(s.values()) == pytest.approx(1.0)
        assert all(v >= 0 for v in s.values())
    assert not frozen.requires_grad
    assert all(p.grad is None for p in model.parameters())

    # "taylor" from its definition: lr * sum(g^2 / (|g| + 1e-8)) ~ lr * sum|g| per batch.
    raw = profile_importance(model, closures[:1], method="taylor", lr=1e-3, normalize=False)
    fisher = profile_importance(model, closures[:1], method="fisher", normalize=False)
    frozen.requires_grad_(True)
    with torch.enable_grad():
        closures[0]().backward()
    for name, p in model.named_parameters():
        g = p.grad.double()
        assert raw[name] == pytest.approx(1e-3 * float((g * g / (g.abs() + 1e-8)).sum()), rel=1e-9)
        assert raw[name] == pytest.approx(1e-3 * float(g.abs().sum()), rel=1e-2)
        assert fisher[name] == pytest.approx(float(g.pow(2).sum()), rel=1e-9)
    with pytest.raises(ValueError, match="taylor"):
        profile_importance(model, closures, method="hessian")


def test_fo_tensors_get_gradients_and_state_zo_tensors_get_neither() -> None:
    model = tiny_llama()
    hz = profiled(model, HiZFOConfig(rho=0.5, fo_lr=1e-3, zo_lr=1e-3))
    assert hz.fo_names and hz.zo_names
    assert set(hz.fo_names) | set(hz.zo_names) == {n for n, _ in model.named_parameters()}
    assert hz.fo_numel + hz.zo_numel == sum(p.numel() for p in model.parameters())
    assert hz.history[0]["fo"] == sorted(hz.fo_names)
    params = dict(model.named_parameters())

    seen_grads = {}

    def capture(optimizer, args, kwargs):
        seen_grads.update({n: params[n].grad is not None for n in params})

    hz.optimizer.register_step_pre_hook(capture)
    before = params_of(model)
    result = hz.step(closure_for(model, batch(0)))
    assert (result.forward_passes, result.backward_passes) == (3, 1)

    for name in hz.fo_names:
        assert seen_grads[name], name
        assert params[name].requires_grad
        assert params[name].grad is None  # freed after the AdamW step
        assert "exp_avg" in hz.optimizer.state[params[name]]
    for name in hz.zo_names:
        assert not seen_grads[name], name
        assert not params[name].requires_grad
        assert params[name] not in hz.optimizer.state
    assert all(not torch.equal(params[n], before[n]) for n in hz.fo_names)
    assert all(not torch.equal(params[n], before[n]) for n in hz.zo_names)


def adamw_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    named = list(model.named_parameters())
    return [
        {
            "params": [p for n, p in named if not default_no_decay(n, p)],
            "weight_decay": weight_decay,
        },
        {"params": [p for n, p in named if default_no_decay(n, p)], "weight_decay": 0.0},
    ]


def test_rho_one_is_adamw_on_the_whole_model() -> None:
    model = tiny_llama()
    reference = copy.deepcopy(model)
    config = HiZFOConfig(
        rho=1.0, fo_lr=1e-2, fo_weight_decay=0.1, fo_betas=(0.8, 0.99), max_grad_norm=0.5
    )
    hz = profiled(model, config)
    assert hz.zo_names == [] and hz.spsa is None
    adamw = torch.optim.AdamW(adamw_groups(reference, 0.1), lr=1e-2, betas=(0.8, 0.99))
    for step in range(3):
        ids = batch(step)
        result = hz.step(closure_for(model, ids))
        assert (result.forward_passes, result.backward_passes) == (1, 1)
        loss = closure_for(reference, ids)()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(reference.parameters()), 0.5)
        adamw.step()
        adamw.zero_grad(set_to_none=True)
        assert result.loss == pytest.approx(float(loss.detach()), rel=1e-5)
        assert_same_params(model, reference)


def independent_mezo_step(model, loss_fn, seed: int, *, eps, lr, wd, q) -> list[float]:
    """MeZO written out from the documented definitions, sharing no code with hizfo.zo's
    step: direction i's seed is derive_seed(seed, "direction", i) (i > 0), z is drawn
    tensor by tensor from one CPU generator seeded with all 64 bits, fresh tensors."""
    params = list(model.named_parameters())

    def zs(s: int) -> list[torch.Tensor]:
        g = torch.Generator()
        seed_generator(g, s)
        return [torch.randn(p.shape, generator=g, dtype=p.dtype) for _, p in params]

    theta = [p.detach().clone() for _, p in params]
    update = [torch.zeros_like(t) for t in theta]
    grads = []
    with torch.no_grad():
        for i in range(q):
            z = zs(seed if i == 0 else derive_seed(seed, "direction", i))
            for (_, p), t, zi in zip(params, theta, z, strict=True):
                p.copy_(t + eps * zi)
            plus = float(loss_fn())
            for (_, p), t, zi in zip(params, theta, z, strict=True):
                p.copy_(t - eps * zi)
            minus = float(loss_fn())
            g = (plus - minus) / (2 * eps)
            grads.append(g)
            for u, zi in zip(update, z, strict=True):
                u += g / q * zi
        for (name, p), t, u in zip(params, theta, update, strict=True):
            decay = 0.0 if default_no_decay(name, p) else wd
            p.copy_(t - lr * (u + decay * t))
    return grads


def test_rho_zero_is_mezo_with_the_steps_own_seed() -> None:
    model = tiny_llama()
    reference = copy.deepcopy(model)
    config = HiZFOConfig(rho=0.0, zo_lr=1e-2, zo_eps=1e-3, zo_q=2, zo_weight_decay=0.1)
    hz = profiled(model, config, seed=7)
    assert hz.fo_names == [] and hz.optimizer is None
    assert hz.history[0]["importance"] == {}  # nothing to select: no profiling backward
    assert not any(p.requires_grad for p in model.parameters())
    steps = []
    for step in range(3):
        ids = batch(step)
        before = params_of(model)
        result = hz.step(closure_for(model, ids))
        seed = derive_seed(7, step)  # the documented per-step seed, not hz.zo_seed
        grads = independent_mezo_step(
            reference, closure_for(reference, ids), seed, eps=1e-3, lr=1e-2, wd=0.1, q=2
        )
        assert (result.forward_passes, result.backward_passes) == (4, 0)
        assert (result.z_draws, result.backward_depth) == (7, 0.0)
        assert result.projected_grads == pytest.approx(grads, rel=1e-3, abs=1e-4)
        assert_same_params(model, reference, atol=1e-6)
        steps.append(
            torch.cat([(p.detach() - before[n]).reshape(-1) for n, p in model.named_parameters()])
        )
    # Each step drew its own z: the moves are far from parallel (a constant seed would
    # give parallel moves up to the small weight decay term).
    for a, b in ((0, 1), (1, 2)):
        cos = torch.nn.functional.cosine_similarity(steps[a], steps[b], dim=0)
        assert abs(float(cos)) < 0.5
    assert all(p.grad is None for p in model.parameters())


def test_reprofiling_moves_tensors_and_keeps_state_of_those_that_stay(monkeypatch) -> None:
    model = tiny_llama()
    names = [n for n, _ in model.named_parameters()]
    layer1 = {n for n in names if ".layers.1." in n}
    # First the upper layer matters, then only its attention and layer 0's MLP.
    first = {n: (1.0 if n in layer1 else 0.01) for n in names}
    second = {
        n: (1.0 if ("layers.1.self_attn" in n or "layers.0.mlp" in n) else 0.01) for n in names
    }
    scripted = iter([first, second])
    monkeypatch.setattr(hizfo.optimizer, "profile_importance", lambda *a, **k: next(scripted))

    config = HiZFOConfig(rho=0.6, reprofile_every=2, fo_lr=1e-3)
    hz = HiZFO(model, config)
    assert hz.profile_due
    with pytest.raises(RuntimeError, match="profile"):
        hz.step(closure_for(model, batch(0)))
    hz.profile([closure_for(model, batch(9))])
    costs = hz.costs  # nothing was traced (scores are scripted): registration order
    assert set(hz.fo_names) == select_fo_tensors(first, costs, budget=0.6)
    for step in range(2):
        assert not hz.profile_due
        hz.step(closure_for(model, batch(step)))
    assert hz.profile_due

    params = dict(model.named_parameters())
    old_fo = set(hz.fo_names)
    old_state = {n: hz.optimizer.state[params[n]] for n in old_fo}
    hz.profile([closure_for(model, batch(9))])
    new_fo = set(hz.fo_names)
    assert new_fo == select_fo_tensors(second, costs, budget=0.6)
    stay, left, joined = old_fo & new_fo, old_fo - new_fo, new_fo - old_fo
    assert stay and left and joined
    assert {k: hz.history[-1][k] for k in ("step", "importance", "fo")} == {
        "step": 2,
        "importance": second,
        "fo": sorted(new_fo),
    }
    assert not hz.profile_due

    for n in stay:
        assert hz.optimizer.state[params[n]] is old_state[n]
        assert int(old_state[n]["step"]) == 2
    for n in left:
        assert not params[n].requires_grad and params[n] not in hz.optimizer.state
    hz.step(closure_for(model, batch(2)))
    for n in stay:
        assert int(hz.optimizer.state[params[n]]["step"]) == 3
    for n in joined:
        assert int(hz.optimizer.state[params[n]]["step"]) == 1


def test_profile_uses_at_most_profile_batches_closures() -> None:
    model = tiny_llama()
    calls = []

    def closure():
        calls.append(1)
        return closure_for(model, batch(0))()

    HiZFO(model, HiZFOConfig(profile_batches=2)).profile([closure] * 5)
    assert len(calls) == 2


def test_hizfo_lowers_the_training_loss() -> None:
    model = tiny_llama()
    ids = batch(0, size=4, length=16)
    hz = profiled(model, HiZFOConfig(rho=0.5, fo_lr=1e-2, zo_lr=1e-2, zo_eps=1e-3), seed=0)
    closure = closure_for(model, ids)
    with torch.no_grad():
        initial = float(closure())
    for _ in range(40):
        hz.step(closure)
    with torch.no_grad():
        final = float(closure())
    assert final < initial - 0.5, (initial, final)  # measured: 4.16 -> 3.23


def test_state_dict_resumes_the_same_trajectory() -> None:
    model = tiny_llama()
    hz = profiled(model, HiZFOConfig(rho=0.5, fo_lr=1e-2, zo_lr=1e-3), seed=3)
    for step in range(2):
        hz.step(closure_for(model, batch(step)))
    clone = copy.deepcopy(model)
    resumed = HiZFO(clone, HiZFOConfig(rho=0.5, fo_lr=1e-2, zo_lr=1e-3), seed=0)
    resumed.load_state_dict(copy.deepcopy(hz.state_dict()))
    assert resumed.fo_names == hz.fo_names and resumed.num_steps == 2 and resumed.seed == 3
    for step in range(2, 4):
        hz.step(closure_for(model, batch(step)))
        resumed.step(closure_for(clone, batch(step)))
    assert_same_params(clone, model, atol=0)


def test_invalid_config() -> None:
    for bad in (
        {"rho": 1.5},
        {"selection": "greedy"},
        {"importance": "hessian"},
        {"zo_q": 0},
        {"zo_eps": 0.0},
        {"profile_batches": 0},
        {"reprofile_every": -1},
    ):
        with pytest.raises(ValueError):
            HiZFOConfig(**bad)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_hybrid_step_on_cuda() -> None:
    model = tiny_llama().cuda()
    hz = HiZFO(model, HiZFOConfig(rho=0.5, fo_lr=1e-2, zo_lr=1e-3))
    ids = batch(0).cuda()
    hz.profile([closure_for(model, ids)])
    state = torch.cuda.get_rng_state()
    result = hz.step(closure_for(model, ids))
    assert torch.equal(torch.cuda.get_rng_state(), state)
    assert result.backward_passes == 1 and result.forward_passes == 3
    assert all(g.device.type == "cuda" for g in hz.spsa._generators.values())


def test_fo_schedule_follows_the_shared_adamw() -> None:
    model = tiny_llama()
    reference = copy.deepcopy(model)
    config = HiZFOConfig(rho=1.0, fo_lr=1e-2, fo_schedule="linear", fo_warmup_steps=1)
    with pytest.raises(ValueError, match="total_steps"):
        HiZFO(model, config)
    hz = HiZFO(model, config, total_steps=4)
    hz.profile([])
    adamw = torch.optim.AdamW(adamw_groups(reference, 0.0), lr=1e-2)
    for step in range(4):
        ids = batch(step)
        hz.step(closure_for(model, ids))
        closure_for(reference, ids)().backward()
        torch.nn.utils.clip_grad_norm_(list(reference.parameters()), 1.0)
        for group in adamw.param_groups:  # warmup 1, then 1, 2/3, 1/3 of the peak
            group["lr"] = 1e-2 * [1.0, 1.0, 2 / 3, 1 / 3][step]
        adamw.step()
        adamw.zero_grad(set_to_none=True)
        assert_same_params(model, reference)


def test_names_subset_freezes_the_rest() -> None:
    model = tiny_llama()
    trained = [n for n, _ in model.named_parameters() if ".layers.1." in n]
    hz = HiZFO(model, HiZFOConfig(rho=0.5, fo_lr=1e-3, zo_lr=1e-3), names=trained)
    frozen = [p for n, p in model.named_parameters() if n not in trained]
    assert not any(p.requires_grad for p in frozen)
    before = [p.detach().clone() for p in frozen]
    hz.profile([closure_for(model, batch(5))])
    assert set(hz.fo_names) | set(hz.zo_names) == set(trained) and hz.fo_names
    hz.step(closure_for(model, batch(0)))
    assert all(p.grad is None and not p.requires_grad for p in frozen)
    assert all(torch.equal(p, b) for p, b in zip(frozen, before, strict=True))


def test_one_sided_hybrid_step_costs_one_zo_forward() -> None:
    model = tiny_llama()
    config = HiZFOConfig(rho=0.5, fo_lr=1e-2, zo_lr=1e-2, zo_eps=1e-2, zo_estimator="one-sided")
    hz = profiled(model, config, seed=2)
    assert hz.fo_names and hz.zo_names
    theta0 = copy.deepcopy(model)
    ids = batch(0)
    result = hz.step(closure_for(model, ids))
    assert (result.forward_passes, result.backward_passes, result.z_draws) == (2, 1, 2)
    # L(theta) is the FO forward at the unperturbed point; L+ by hand on the copy.
    with torch.no_grad():
        loss0 = float(closure_for(theta0, ids)())
        probe = SPSA(
            [(n, p) for n, p in theta0.named_parameters() if n in set(hz.zo_names)],
            SPSAConfig(eps=1e-2),
        )
        probe.perturb_(hz.zo_seed(0), 1.0)
        loss_plus = float(closure_for(theta0, ids)())
    assert result.loss == pytest.approx(loss0, rel=1e-6)
    assert result.projected_grads == pytest.approx([(loss_plus - loss0) / 1e-2], rel=1e-4)


def _loss64(model: torch.nn.Module, ids: torch.Tensor):
    """A float64 next-token loss (transformers' own loss would upcast to float32 only)."""

    def loss_fn() -> torch.Tensor:
        logits = model(input_ids=ids).logits[:, :-1]
        return torch.nn.functional.cross_entropy(logits.reshape(-1, 64), ids[:, 1:].reshape(-1))

    return loss_fn


@pytest.mark.parametrize("max_grad_norm", [None, 0.05], ids=["unclipped", "clipped"])
def test_fo_gain_is_minus_grad_dot_the_applied_update(max_grad_norm) -> None:
    """fo_gain = -grad L . delta theta with the raw (unclipped) gradient and the update
    AdamW really applied; at a small rate it is the loss decrease on the batch."""
    model = tiny_llama(dtype=torch.float64)
    loss_fn = _loss64(model, batch(3))
    with torch.enable_grad():
        loss_fn().backward()
    raw = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    config = HiZFOConfig(rho=1.0, fo_lr=1e-4, fo_weight_decay=0.1, max_grad_norm=max_grad_norm)
    hz = profiled(model, config)
    before = params_of(model)
    loss_before = float(loss_fn().detach())
    result = hz.step(loss_fn)
    moved = sum(float((p.detach() - before[n]).mul(raw[n]).sum()) for n, p in hz._params.items())
    assert result.fo_gain == pytest.approx(-moved, rel=1e-9)
    assert result.zo_gain == 0.0  # no ZO set at rho = 1
    decrease = loss_before - float(loss_fn())
    assert result.fo_gain == pytest.approx(decrease, rel=0.05)
    assert result.fo_gain > 0


def test_zo_gain_is_lr_times_the_squared_projected_gradient() -> None:
    """zo_gain = (lr / q) sum g_i^2; at a small rate, the loss decrease of the ZO update."""
    model = tiny_llama(dtype=torch.float64)
    loss_fn = _loss64(model, batch(3))
    for q in (1, 2):
        hz = profiled(model, HiZFOConfig(rho=0.0, zo_lr=1e-3, zo_eps=1e-5, zo_q=q))
        loss_before = float(loss_fn().detach())
        result = hz.step(loss_fn)
        g = result.projected_grads
        assert len(g) == q
        assert result.zo_gain == pytest.approx(1e-3 * sum(x * x for x in g) / q, rel=1e-12)
        assert result.fo_gain == 0.0  # no FO set at rho = 0
        if q == 1:  # one direction: the update is along z, the prediction first-order exact
            assert result.zo_gain == pytest.approx(loss_before - float(loss_fn()), rel=0.05)


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
            ],
        ),
    ],
)
def test_fo_gain_in_float32_agrees_with_a_float64_reference(device) -> None:
    """No copy of the weights is taken: fo_gain is a difference of two grad . theta dots,
    which float32 weights must not drown in rounding."""
    model = tiny_llama().to(device)
    closure = closure_for(model, batch(3).to(device))
    with torch.enable_grad():
        closure().backward()
    raw = {n: p.grad.double() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    hz = profiled(model, HiZFOConfig(rho=1.0, fo_lr=1e-5, max_grad_norm=None))
    before = {n: p.double() for n, p in params_of(model).items()}
    result = hz.step(closure)
    moved = sum(
        float((p.detach().double() - before[n]).mul(raw[n]).sum()) for n, p in hz._params.items()
    )
    assert result.fo_gain == pytest.approx(-moved, rel=1e-3)


def test_grad_dot_groups_give_the_float64_dot(monkeypatch) -> None:
    import hizfo.optimizer as optimizer

    g = torch.Generator().manual_seed(0)
    params = []
    for shape in [(40, 30), (17,), (300,), (8, 8)]:
        p = torch.nn.Parameter(torch.randn(shape, generator=g))
        p.grad = torch.randn(shape, generator=g)
        params.append(p)
    expected = sum(float((p.grad.double() * p.detach().double()).sum()) for p in params)
    from test_zo_buckets import OpCounter

    from hizfo.zo import launch_plan

    with OpCounter() as cpu:  # on a CPU: one dot per tensor
        assert optimizer._grad_dot(params) == pytest.approx(expected, rel=1e-6)
    assert cpu.calls["dot"] == len(params)
    for group in (1, 100, 1 << 22):  # a tensor per group, several, all in one
        monkeypatch.setattr(optimizer, "_DOT_GROUP_NUMEL", group)
        with launch_plan(), OpCounter() as launch:  # as on a GPU: grouped
            assert optimizer._grad_dot(params) == pytest.approx(expected, rel=1e-6)
        assert "dot" not in launch.calls
    assert launch.calls["_foreach_mul"] == launch.calls["_chunk_cat"] == 1  # all in one
