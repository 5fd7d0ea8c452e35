"""MeZO's opt-ins (keep_z, Rademacher z): reach the estimator, keep MeZO's update, and are
what the perf rows of `mezo[...]` run."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from baselines.mezo import MeZO, MeZOConfig
from bench.method import TrainContext
from bench.perf import PerfSettings
from bench.perf.methods import method_variants


def _model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(config).double()


def _train(config: MeZOConfig, steps: int = 3) -> tuple[MeZO, dict[str, torch.Tensor], list]:
    model = _model()
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "labels": ids}
    method = MeZO(config)
    method.setup(model, TrainContext(total_steps=steps, seed=0, device=torch.device("cpu")))
    stats = [method.step(batch, i) for i in range(steps)]
    return method, {n: p.detach().clone() for n, p in model.named_parameters()}, stats


def test_keep_z_draws_once_and_gives_the_default_update():
    base = MeZOConfig(lr=1e-2, eps=1e-3)
    default, theta, stats = _train(base)
    kept, theta_kept, stats_kept = _train(MeZOConfig(lr=1e-2, eps=1e-3, keep_z=True))
    assert default.spsa.draws == 3 * 3 and kept.spsa.draws == 3  # one draw per step
    for name, p in theta.items():
        torch.testing.assert_close(theta_kept[name], p, rtol=0, atol=1e-12, msg=name)
    assert [s.extra["projected_grad"] for s in stats_kept] == pytest.approx(
        [s.extra["projected_grad"] for s in stats], rel=1e-9
    )


def test_rademacher_reaches_the_estimator_and_draws_signs():
    method, theta, _ = _train(MeZOConfig(lr=1e-2, distribution="rademacher"), steps=1)
    assert method.spsa.distribution == "rademacher"
    _, gaussian, _ = _train(MeZOConfig(lr=1e-2), steps=1)
    # A different z: the update differs from the Gaussian one, and it is +-lr g exactly.
    start = dict(_model().named_parameters())
    name = "model.layers.0.mlp.up_proj.weight"
    moved = (theta[name] - start[name].detach()).abs()
    assert not torch.allclose(theta[name], gaussian[name])
    assert torch.allclose(moved, moved.flatten()[0].expand_as(moved), rtol=1e-6)


def test_unknown_distribution_is_a_config_error():
    with pytest.raises(ValueError, match="distribution"):
        MeZOConfig(distribution="uniform")


def test_perf_rows_of_mezo_are_its_variants():
    rows = {
        label: overrides
        for label, name, overrides in method_variants(PerfSettings(methods=("mezo",)))
    }
    assert rows == {
        "mezo": {},
        "mezo[keep_z]": {"keep_z": True},
        "mezo[rademacher]": {"distribution": "rademacher"},
        "mezo[keep_z+rademacher]": {"keep_z": True, "distribution": "rademacher"},
    }
