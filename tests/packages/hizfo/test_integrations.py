"""HiZFOTrainer: a transformers.Trainer whose every step is exactly one Hi-ZFO step.

The reference is a hand-written HiZFO loop on the same batches: any extra update by the
Trainer's own optimizer, scheduler or accumulation, a second Hi-ZFO step per Trainer
step, or profiling on other data would make the weights differ.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from helpers import REPO
from helpers.tiny import VOCAB, tiny_llama

from hizfo import HiZFO, HiZFOConfig

FROZEN = "model.layers.0.mlp.up_proj.weight"


def _args(tmp_path, **overrides):
    from transformers import TrainingArguments

    kw = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=6,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        seed=3,
        disable_tqdm=True,
    )
    kw.update(overrides)
    return TrainingArguments(**kw)


def _rows(ids: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    return [{"input_ids": row, "labels": row} for row in ids]


def _counting_sequences(n: int, length: int = 16) -> torch.Tensor:
    """Each row counts up by one from its own start (mod VOCAB): learnable in a few steps."""
    starts = torch.randint(0, VOCAB, (n, 1), generator=torch.Generator().manual_seed(1))
    return (starts + torch.arange(length)) % VOCAB


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _trainer(model, args, data, config, **kw):
    from hizfo.integrations import HiZFOTrainer

    return HiZFOTrainer(model=model, args=args, train_dataset=data, hizfo_config=config, **kw)


def test_trainer_equals_a_manual_hizfo_loop_with_reprofiling(tmp_path):
    # One example and batch size 1: every batch, training or profiling, is that example,
    # so the manual loop sees exactly what the Trainer saw.
    ids = _counting_sequences(1)
    config = HiZFOConfig(rho=0.5, fo_lr=1e-2, zo_lr=1e-3, profile_batches=2, reprofile_every=2)
    steps = 5

    model = tiny_llama()
    model.get_parameter(FROZEN).requires_grad_(False)
    trainer = _trainer(
        model, _args(tmp_path, per_device_train_batch_size=1, max_steps=steps), _rows(ids), config
    )
    trainer.train()

    reference = tiny_llama()
    names = [n for n, _ in reference.named_parameters() if n != FROZEN]
    manual = HiZFO(reference, config, seed=3, names=names)
    closure = lambda: reference(input_ids=ids, labels=ids).loss  # noqa: E731
    for _ in range(steps):
        if manual.profile_due:
            manual.profile([closure] * config.profile_batches)
        manual.step(closure)

    assert trainer.hizfo.num_steps == steps
    assert [h["step"] for h in trainer.hizfo.history] == [0, 2, 4]
    assert trainer.hizfo.history[-1]["fo"] == manual.history[-1]["fo"]
    got = dict(model.named_parameters())
    for name, p in reference.named_parameters():
        torch.testing.assert_close(got[name], p, rtol=0, atol=1e-6, msg=name)


def test_fo_zo_split_and_frozen_tensors(tmp_path):
    data = _rows(_counting_sequences(8))
    model = tiny_llama()
    model.get_parameter(FROZEN).requires_grad_(False)
    before = _snapshot(model)
    config = HiZFOConfig(rho=0.4, fo_lr=1e-2, zo_lr=1e-3, profile_batches=2)
    trainer = _trainer(model, _args(tmp_path, max_steps=4), data, config)
    trainer.train()

    opt = trainer.hizfo
    assert opt.fo_names and opt.zo_names
    assert FROZEN not in opt.fo_names + opt.zo_names
    after = dict(model.named_parameters())
    assert torch.equal(after[FROZEN], before[FROZEN])
    for name in opt.fo_names + opt.zo_names:
        assert not torch.equal(after[name], before[name]), name
    # FO tensors were moved by AdamW (one state entry each, 4 steps); ZO tensors have none.
    adam_state = {p: s for p, s in opt.optimizer.state.items()}
    for name in opt.fo_names:
        assert int(adam_state[after[name]]["step"]) == 4, name
    for name in opt.zo_names:
        assert after[name] not in adam_state
        assert after[name].grad is None
    # The Trainer's own optimizer holds no model tensor and no state.
    inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    held = [p for g in inner.param_groups for p in g["params"]]
    assert [p.numel() for p in held] == [0] and not inner.state


def test_loss_goes_down_and_is_logged_like_a_normal_step(tmp_path):
    ids = _counting_sequences(4)
    model = tiny_llama()

    def full_loss() -> float:
        with torch.no_grad():
            return float(model(input_ids=ids, labels=ids).loss)

    start = full_loss()
    config = HiZFOConfig(rho=0.5, fo_lr=1e-2, zo_lr=1e-3, profile_batches=1)
    trainer = _trainer(model, _args(tmp_path, max_steps=15), _rows(ids), config)
    trainer.train()

    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 15
    # Batch = the whole data set, so step 1 logs the loss at the initial weights.
    assert logged[0]["loss"] == pytest.approx(start, rel=1e-5)
    assert all(h["learning_rate"] == pytest.approx(config.fo_lr) for h in logged)
    assert full_loss() < start - 0.2  # 15 steps; a step that does not train moves < 0.01
    assert logged[-1]["loss"] < logged[0]["loss"] - 0.2


def test_gradient_accumulation_and_own_optimizers_are_refused(tmp_path):
    data = _rows(_counting_sequences(4))
    config = HiZFOConfig()
    with pytest.raises(ValueError, match="gradient_accumulation_steps=1"):
        _trainer(tiny_llama(), _args(tmp_path, gradient_accumulation_steps=2), data, config)
    model = tiny_llama()
    adamw = torch.optim.AdamW(model.parameters())
    with pytest.raises(ValueError, match="optimizers"):
        _trainer(model, _args(tmp_path), data, config, optimizers=(adamw, None))


def test_hizfo_stays_torch_only_until_the_trainer_is_used():
    code = (
        "import sys, hizfo, hizfo.integrations as i\n"
        "from hizfo.integrations import HiZFOTrainerMixin\n"
        "assert 'transformers' not in sys.modules, 'imported too early'\n"
        "cls = i.HiZFOTrainer\n"
        "import transformers\n"
        "assert issubclass(cls, transformers.Trainer) and cls is i.HiZFOTrainer\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_readme_trainer_example_runs(tmp_path, monkeypatch, capsys):
    import re

    readme = REPO / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S)
    example = next(b for b in blocks if "HiZFOTrainer(" in b)
    monkeypatch.chdir(tmp_path)  # the example's output_dir lands here
    scope: dict = {}
    exec(compile(example, "README.md", "exec"), scope)
    trainer = scope["trainer"]
    assert trainer.state.global_step == 8
    assert [h["step"] for h in trainer.hizfo.history] == [0, 4]
    assert len([h for h in trainer.state.log_history if "loss" in h]) == 4
    assert str(trainer.hizfo.fo_names) in capsys.readouterr().out


# ---- checkpoints and resume, the mixin on another Trainer (trl's SFTTrainer) ---------


class _Killed(Exception):
    pass


def _kill_at(step: int):
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        """Stands in for a killed job: training stops after `step` steps."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise _Killed(f"killed after step {step}")

    return Kill()


def _plain_case(tmp_path, output_dir, max_steps):
    from hizfo.integrations import HiZFOTrainer

    data = _rows(_counting_sequences(8))
    args = _args(
        output_dir, per_device_train_batch_size=2, max_steps=max_steps, save_strategy="steps",
        save_steps=3,
    )  # fmt: skip
    return lambda config: HiZFOTrainer(
        model=tiny_llama(), args=args, train_dataset=data, hizfo_config=config
    )


def _sft_case(tmp_path, output_dir, max_steps):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from bench import models
    from hizfo.integrations import HiZFOTrainerMixin

    class HiZFOSFTTrainer(HiZFOTrainerMixin, SFTTrainer):
        pass

    texts = [f"{a} + {b} = {a + b}" for a, b in zip(range(8), range(3, 11), strict=True)]
    data = Dataset.from_dict({"text": texts})
    args = SFTConfig(
        output_dir=str(output_dir), per_device_train_batch_size=2, max_steps=max_steps,
        save_strategy="steps", save_steps=3, logging_steps=1, report_to="none",
        use_cpu=True, seed=3, disable_tqdm=True, bf16=False, gradient_checkpointing=False,
        max_length=32,
    )  # fmt: skip

    def make(config):
        model, tokenizer, _ = models.load("tiny")
        return HiZFOSFTTrainer(
            model=model,
            args=args,
            train_dataset=data,
            processing_class=tokenizer,
            hizfo_config=config,
        )

    return make


@pytest.mark.parametrize("case", [_plain_case, _sft_case], ids=["Trainer", "SFTTrainer"])
def test_a_resumed_run_ends_at_the_uninterrupted_weights(tmp_path, case):
    # 8 examples in batches of 2 for 7 steps: the training stream crosses epochs, and
    # profiling every 2 steps on 3 batches re-opens its own 4-batch dataloader at step 2
    # and again at step 4, after the resume point (checkpoint-3, killed after step 5),
    # which must continue that stream at its third batch.
    config = HiZFOConfig(
        rho=0.5, fo_lr=1e-2, zo_lr=1e-3, profile_batches=3, reprofile_every=2
    )  # fmt: skip
    whole = case(tmp_path, tmp_path / "whole", 7)(config)
    whole.train()

    killed = case(tmp_path, tmp_path / "killed", 7)(config)
    killed.add_callback(_kill_at(5))
    with pytest.raises(_Killed):
        killed.train()
    assert (tmp_path / "killed" / "checkpoint-3" / "hizfo_state.pt").is_file()
    assert not (tmp_path / "killed" / "checkpoint-6").exists()

    resumed = case(tmp_path, tmp_path / "killed", 7)(config)
    resumed.train(resume_from_checkpoint=True)

    assert resumed.hizfo.num_steps == whole.hizfo.num_steps == 7
    assert [h["step"] for h in resumed.hizfo.history] == [0, 2, 4, 6]
    # The same profiling batches: the same importance scores, to the last bit.
    assert resumed.hizfo.history == whole.hizfo.history

    def losses(trainer):
        return {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}

    after = {s: v for s, v in losses(whole).items() if s > 3}
    assert {s: v for s, v in losses(resumed).items() if s > 3} == after
    got = dict(resumed.model.named_parameters())
    for name, p in whole.model.named_parameters():
        assert torch.equal(got[name], p), name


def test_a_checkpoint_without_hizfo_state_resumes_with_a_warning(tmp_path, caplog):
    config = HiZFOConfig(rho=0.5, fo_lr=1e-2, zo_lr=1e-3, profile_batches=1)
    killed = _plain_case(tmp_path, tmp_path, 4)(config)
    killed.add_callback(_kill_at(4))
    with pytest.raises(_Killed):
        killed.train()
    (tmp_path / "checkpoint-3" / "hizfo_state.pt").unlink()
    resumed = _plain_case(tmp_path, tmp_path, 4)(config)
    with caplog.at_level("WARNING", logger="hizfo.integrations"):
        resumed.train(resume_from_checkpoint=True)
    assert "holds no hizfo_state.pt" in caplog.text
    assert resumed.hizfo.num_steps == 1  # Hi-ZFO started afresh at the Trainer's step 3
