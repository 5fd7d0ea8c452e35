"""`lora` (baselines/lora.py): only adapters train, evaluation sees them, the loss drops."""

from __future__ import annotations

import pytest
import torch

from baselines.lora import LoRA, LoRAConfig
from bench.data import collate
from bench.method import TrainContext, causal_lm_loss
from bench.spec import EvalConfig, TrainConfig, TrialSpec
from bench.tasks import get_task
from bench.train.recipe import run_trial


@pytest.fixture
def batch(tiny):
    _, tokenizer = tiny
    return collate(get_task("math-mini").train_examples()[:4], tokenizer, 96)


def _setup(model, config: LoRAConfig, steps: int = 10) -> LoRA:
    method = LoRA(config)
    method.setup(model, TrainContext(total_steps=steps, seed=0, device=torch.device("cpu")))
    return method


def test_only_adapter_weights_change(tiny_fresh, batch):
    model, _ = tiny_fresh
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    method = _setup(model, LoRAConfig(lr=1e-2))
    trained = method.model
    adapters = {n: p.detach().clone() for n, p in trained.named_parameters() if "lora_" in n}
    assert adapters and all(
        p.requires_grad == ("lora_" in n) for n, p in trained.named_parameters()
    )
    for step in range(3):
        method.step(batch, step)
    after = dict(trained.named_parameters())
    # peft renames wrapped layers (q_proj.weight -> q_proj.base_layer.weight).
    for name, before in base.items():
        new = (
            after.get(name)
            if name in after
            else after[name.replace(".weight", ".base_layer.weight")]
        )
        assert torch.equal(new, before), f"base weight {name} changed"
        assert new.grad is None
    for name, before in adapters.items():
        assert not torch.equal(after[name], before), f"adapter {name} did not change"


def test_returned_model_is_plain_and_runs_the_adapters(tiny_fresh, batch):
    from transformers import PreTrainedModel

    model, _ = tiny_fresh
    method = _setup(model, LoRAConfig(lr=1e-2))
    # lm-eval's HFLM gets what setup returned: it must be the transformers model itself,
    # and its forward must include the adapters (no merge step exists after training).
    assert isinstance(method.model, PreTrainedModel)
    for step in range(3):
        method.step(batch, step)
    with torch.no_grad():
        with_adapters = causal_lm_loss(method.model, batch)
        with method.peft_model.disable_adapter():
            without = causal_lm_loss(method.model, batch)
    assert not torch.isclose(with_adapters, without)


def test_summary_counts_adapter_parameters(tiny_fresh):
    model, _ = tiny_fresh
    config = LoRAConfig(rank=4, target_modules=["q_proj", "v_proj"])
    linears = {
        n: m for n, m in model.named_modules() if n.endswith(("q_proj", "v_proj")) and "." in n
    }
    expected = sum(4 * (m.in_features + m.out_features) for m in linears.values())
    summary = _setup(model, config).summary()
    assert summary["trainable_parameters"] == expected
    assert summary["adapted_modules"] == len(linears) == 4
    assert summary["rank"] == 4 and summary["target_modules"] == ["q_proj", "v_proj"]


def test_unknown_target_modules_fail_at_setup(tiny_fresh):
    model, _ = tiny_fresh
    with pytest.raises(ValueError, match="nope_proj"):
        _setup(model, LoRAConfig(target_modules=["nope_proj"]))


def test_step_reports_passes_with_accumulation(tiny_fresh, batch):
    model, _ = tiny_fresh
    stats = _setup(model, LoRAConfig(grad_accumulation=2)).step(batch, 0)
    assert (stats.forward_passes, stats.backward_passes) == (2, 2)


def test_lora_lowers_the_training_loss():
    # As tests/packages/bench/train/test_trial.py::test_methods_lower_the_training_loss: one fixed batch of 4.
    # Adapters start at zero (B = 0) on a random-init model, hence the large tiny-model lr.
    spec = TrialSpec(
        method="lora",
        task="math-mini",
        model="tiny",
        seed=0,
        method_config={"lr": 1e-2},
        train=TrainConfig(steps=30, batch_size=4, max_length=96, train_examples=4, log_every=5),
        eval=EvalConfig(limit=4, batch_size=4, max_gen_toks=8),
    )
    record = run_trial(spec)
    assert record["status"] == "ok", record["error"]  # includes lm-eval on the LoRA model
    first, last = record["curve"][0]["loss"], record["curve"][-1]["loss"]
    assert last < first - 0.05, record["curve"]
    assert record["passes"] == {"forward": 30, "backward": 30}
    assert record["method_summary"]["trainable_parameters"] < record["model_info"]["parameters"]


def test_a_named_module_the_model_lacks_is_an_error_naming_its_linear_layers(tiny_fresh):
    model, _ = tiny_fresh
    with pytest.raises(ValueError, match=r"no module 'qkv'; its linear layers: .*q_proj"):
        _setup(model, LoRAConfig(target_modules=["q_proj", "qkv"]))


def test_opt_adapts_its_four_attention_projections_with_the_default(caplog):
    # OPT names the attention output projection out_proj, not o_proj: the default's
    # documented fallback adapts it (before, only q, k and v were adapted, silently).
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, ffn_dim=32,
        num_attention_heads=2, max_position_embeddings=32, word_embed_proj_dim=16,
    )  # fmt: skip
    model = OPTForCausalLM(config)
    with caplog.at_level("WARNING", logger="hizfo_bench.lora"):
        method = _setup(model, LoRAConfig())
    summary = method.summary()
    assert summary["target_modules"] == ["q_proj", "k_proj", "v_proj", "out_proj"]
    assert summary["adapted_modules"] == 4  # one layer, four projections
    assert "no o_proj; adapting out_proj" in caplog.text
