"""Trial checkpoints: the final model loads elsewhere, and a killed trial resumes bit for bit.

The kill is a hook raising after step 5 of 6, with a checkpoint every 2 steps: the rerun
in the same run folder must resume at step 4 and produce exactly the losses, dev losses,
step extras and final weights of a run that was never interrupted.
"""

from __future__ import annotations

import json

import pytest
import torch

from bench.config import ConfigError, build
from bench.spec import DevConfig, EvalConfig, TrainConfig, TrialSpec
from bench.train.checkpoint import META, TrialCheckpoints
from bench.train.hooks import Hook
from bench.train.recipe import run_trial

STEPS = 6


class Killed(Exception):
    pass


class KillHook(Hook):
    """Stands in for a killed worker: the trial stops after `at` steps, leaving no
    result and the checkpoints written so far."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step(self, state, stats) -> None:
        if state.step == self.at:
            raise Killed(f"killed after step {state.step}")


def _spec(method: str, config: dict, save: str = "final") -> TrialSpec:
    return TrialSpec(
        method=method,
        task="math-mini",
        model="tiny",
        seed=1,
        method_config=config,
        train=TrainConfig(
            steps=STEPS,
            batch_size=2,
            max_length=64,
            train_examples=12,
            log_every=1,
            save=save,
            save_every=2,
        ),
        dev=DevConfig(eval_every=3, batches=1),
        eval=EvalConfig(limit=1, batch_size=1, max_gen_toks=2),
    )


def _weights(folder) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    return {n: p.detach() for n, p in model.named_parameters()}


METHODS = [
    ("fo-adamw", {"lr": 1e-3}),
    ("mezo", {"lr": 1e-3}),
    # Re-profiling at step 4, the step the resumed run starts at: the FO set is chosen
    # again from the restored AdamW moments on the restored profiling stream.
    (
        "hizfo",
        {"rho": 0.5, "fo_lr": 1e-3, "zo_lr": 1e-3, "profile_batches": 1, "reprofile_every": 2},
    ),
    ("lora", {"lr": 1e-3, "rank": 2}),
]


@pytest.mark.parametrize("method, config", METHODS, ids=[m for m, _ in METHODS])
def test_a_killed_trial_resumes_bit_for_bit(tmp_path, method, config):
    spec = _spec(method, config)
    whole = run_trial(spec, run_dir=tmp_path / "whole")
    assert whole["status"] == "ok", whole["error"]

    run = tmp_path / "killed"
    killed = run_trial(spec, run_dir=run, hooks=[KillHook(5)])
    assert killed["status"] == "failed" and "killed after step 5" in killed["error"]
    assert killed["checkpoint"]["saved_steps"] == [2, 4]
    assert killed["checkpoint"]["path"] is None  # no final model: it never finished
    ckpt_dir = run / "checkpoints" / spec.trial_id
    # The two newest: the one before is there to fall back on.
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["step-00000002", "step-00000004"]

    resumed = run_trial(spec, run_dir=run)
    assert resumed["status"] == "ok", resumed["error"]
    assert resumed["checkpoint"]["resumed_from_step"] == 4
    assert resumed["checkpoint"]["resumed_from"] == f"checkpoints/{spec.trial_id}/step-00000004"
    assert resumed["checkpoint"]["path"] == f"checkpoints/{spec.trial_id}"

    # Exact float equality, step by step (log_every 1): losses, dev losses, extras.
    assert [p["step"] for p in resumed["curve"]] == list(range(1, STEPS + 1))
    assert [p["loss"] for p in resumed["curve"]] == [p["loss"] for p in whole["curve"]]
    assert [p["dev_loss"] for p in resumed["eval_curve"]] == [
        p["dev_loss"] for p in whole["eval_curve"]
    ]
    assert [p["step"] for p in resumed["eval_curve"]] == [0, 3, 6]
    assert resumed.get("step_extra") == whole.get("step_extra")
    assert resumed["passes"] == whole["passes"]
    if method == "hizfo":
        profiles = resumed["method_summary"]["profiles"]
        assert [p["step"] for p in profiles] == [0, 2, 4]
        assert profiles == whole["method_summary"]["profiles"]
    assert resumed["score"] == whole["score"]

    # The final models, written by save_pretrained, are the same tensors.
    a = _weights(tmp_path / "whole" / whole["checkpoint"]["path"])
    b = _weights(run / resumed["checkpoint"]["path"])
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # Intermediate checkpoints are gone once the trial ended ok; the final one stays.
    assert not list(ckpt_dir.glob("step-*"))
    assert json.loads((ckpt_dir / META).read_text())["step"] == STEPS


def test_final_checkpoint_loads_in_transformers_and_lm_eval(tmp_path):
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.train.recipe import TrialRecipe

    spec = _spec("fo-adamw", {"lr": 1e-3})
    recipe = TrialRecipe(spec, torch.device("cpu"), run_dir=tmp_path)
    recipe.setup()
    recipe.train()
    folder = tmp_path / "checkpoints" / spec.trial_id
    trained = dict(recipe.model.named_parameters())

    loaded = AutoModelForCausalLM.from_pretrained(folder)
    for name, p in loaded.named_parameters():
        assert torch.equal(p, trained[name]), name
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer("1 + 1")["input_ids"] == recipe.tokenizer("1 + 1")["input_ids"]
    # What `lm_eval --model hf --model_args pretrained=<folder>` builds.
    lm = HFLM(pretrained=str(folder), device="cpu", batch_size=1)
    for name, p in lm.model.named_parameters():
        assert torch.equal(p, trained[name]), name
    # The method's state beside it: AdamW's moments after 6 steps.
    state = torch.load(folder / "method_state.pt", weights_only=False)
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {STEPS}


def test_lora_final_checkpoint_is_the_merged_model(tmp_path):
    from transformers import AutoModelForCausalLM

    from bench.train.recipe import TrialRecipe

    spec = _spec("lora", {"lr": 1e-2, "rank": 2})
    recipe = TrialRecipe(spec, torch.device("cpu"), run_dir=tmp_path)
    recipe.setup()
    recipe.train()
    folder = tmp_path / "checkpoints" / spec.trial_id
    merged = AutoModelForCausalLM.from_pretrained(folder)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert (folder / "adapter" / "adapter_config.json").is_file()
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    with torch.no_grad():
        want = recipe.model(input_ids=ids).logits
        got = merged(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # The in-memory model keeps its adapters (evaluation runs on it after the save).
    assert any("lora_A" in n for n, _ in recipe.model.named_parameters())


def test_a_trial_killed_after_training_does_not_train_again(tmp_path):
    spec = _spec("fo-adamw", {"lr": 1e-3})
    first = run_trial(spec, run_dir=tmp_path)
    assert first["status"] == "ok", first["error"]
    # Its result never reached the run folder: the rerun starts from the final checkpoint.
    again = run_trial(spec, run_dir=tmp_path)
    assert again["status"] == "ok", again["error"]
    assert again["checkpoint"]["resumed_from_step"] == STEPS
    assert again["curve"] == first["curve"] and again["score"] == first["score"]
    assert again["checkpoint"]["saved_steps"] == []  # nothing trained, nothing rewritten


def test_incomplete_checkpoints_are_ignored(tmp_path):
    ckpt = TrialCheckpoints(tmp_path, "t", save_every=2, final=False)
    for name, step, complete in [("step-00000002", 2, True), ("step-00000004", 4, False)]:
        folder = ckpt.folder / name
        folder.mkdir(parents=True)
        if complete:
            (folder / META).write_text(json.dumps({"trial_id": "t", "step": step}))
    (ckpt.folder / "step-00000006.tmp").mkdir()
    (ckpt.folder / "step-00000006.tmp" / META).write_text('{"trial_id": "t", "step": 6}')
    other = ckpt.folder / "step-00000008"
    other.mkdir()
    (other / META).write_text(json.dumps({"trial_id": "another", "step": 8}))
    assert ckpt.latest() == ckpt.folder / "step-00000002"
    assert ckpt.due(2, 6) and not ckpt.due(3, 6)
    assert TrialCheckpoints(tmp_path, "t", save_every=2, final=True).due(6, 6) is False


def test_save_settings_are_checked_and_leave_the_trial_id_alone():
    plain = _spec("mezo", {"lr": 1e-3}, save="none")
    saving = _spec("mezo", {"lr": 1e-3}, save="final")
    saving.train.save_every = 7
    assert plain.trial_id == saving.trial_id
    with pytest.raises(ConfigError, match=r"train\.save: 'best' is not allowed.*none, final"):
        build(TrainConfig, {"save": "best"}, "train")
    with pytest.raises(ConfigError, match=r"train\.save_every"):
        build(TrainConfig, {"save_every": -1}, "train")
