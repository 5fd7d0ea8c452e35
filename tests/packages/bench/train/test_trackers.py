"""Trackers: TensorBoard events read back with the logged values; missing packages fail early."""

import importlib.machinery
import importlib.util

import pytest
from helpers.specs import make_spec

from bench.cli import main
from bench.record import TrialRecord
from bench.spec import EvalConfig, TrainConfig, TrialSpec
from bench.train import trackers
from bench.train.hooks import LoopState, TrainClock
from bench.train.recipe import run_trial

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)


def _scalars(folder):
    events = EventAccumulator(str(folder))
    events.Reload()
    tags = events.Tags()["scalars"]
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in tags}


def test_tensorboard_events_hold_the_logged_losses_and_results(tmp_path):
    spec = make_spec("fo-adamw", {"lr": 1e-3})
    record = run_trial(spec, run_dir=tmp_path, tracker="tensorboard")
    assert record["status"] == "ok", record["error"]
    trackers.log_result("tensorboard", tmp_path, record)  # what the worker does next

    scalars = _scalars(tmp_path / "tb" / spec.trial_id)
    curve = [(p["step"], p["loss"]) for p in record["curve"]]
    assert [s for s, _ in scalars["train/loss"]] == [2, 4, 6] == [s for s, _ in curve]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([v for _, v in curve], rel=1e-6)
    assert scalars["final/steps"] == [(6, 6.0)]
    assert scalars["test/score"][0][1] == pytest.approx(record["score"])
    strict = "test/exact_match,strict-match"
    assert scalars[strict][0][1] == pytest.approx(record["metrics"]["exact_match,strict-match"])
    hparams = _session_hparams(tmp_path / "tb" / spec.trial_id)
    assert hparams["method"] == "fo-adamw" and hparams["seed"] == 0
    assert hparams["method_config.lr"] == pytest.approx(1e-3)
    assert hparams["train.steps"] == 6 and hparams["phase"] == "final"


def _session_hparams(folder):
    """The HParams session a trial's event files hold: {name: value}."""
    from tensorboard.plugins.hparams import metadata

    events = EventAccumulator(str(folder))
    events.Reload()
    (content,) = events.PluginTagToContent(metadata.PLUGIN_NAME).values()
    info = metadata.parse_session_start_info_plugin_data(content)
    return {name: getattr(value, value.WhichOneof("kind")) for name, value in info.hparams.items()}


def test_hparams_view_compares_a_sweep(tmp_path):
    """Two trials of a sweep as TensorBoard's HParams plugin sees them: the union of
    their hyperparameters, the one that differs marked so, their scalars as metrics."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer as pem
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import backend_context

    state = LoopState(
        record=TrialRecord("t", "m", "task", "model", 0), total_steps=2, clock=TrainClock()
    )
    state.step = 2
    for name, lr in (("a", 1e-3), ("b", 1e-4)):
        spec = {
            "method": "mezo",
            "task": "math-mini",
            "model": "tiny",
            "seed": 0,
            "method_config": {"lr": lr, "eps": 1e-3, "schedule": None, "betas": [0.9, 0.99]},
            "train": {"steps": 2},
        }
        (hook,) = trackers.tracker_hooks("tensorboard", tmp_path, name, spec)
        hook.on_eval_point(state, {"step": 2, "dev_loss": 2.0 + lr})
        hook.on_end(state)
    assert _session_hparams(tmp_path / "tb" / "a")["method_config.betas"] == "[0.9, 0.99]"

    logdir = str(tmp_path / "tb")
    mux = pem.EventMultiplexer()
    mux.AddRunsFromDirectory(logdir)
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, logdir)
    tb = base_plugin.TBContext(logdir=logdir, data_provider=provider, multiplexer=mux)
    backend = backend_context.Context(tb)
    ctx = context.RequestContext()
    experiment = backend.experiment_from_metadata(
        ctx,
        "",
        True,
        backend.hparams_metadata(ctx, ""),
        backend.hparams_from_data_provider(ctx, "", 0),
    )
    infos = {h.name: h for h in experiment.hparam_infos}
    assert {"method", "seed", "method_config.lr", "method_config.eps", "train.steps"} <= set(infos)
    assert "method_config.schedule" not in infos  # None: left out
    assert infos["method_config.lr"].differs and not infos["method_config.eps"].differs
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert {"eval/dev_loss", "final/steps"} <= metrics


def test_hparams_of_flattens_the_spec():
    spec = {
        "method": "hizfo",
        "seed": 1,
        "phase": "tune",
        "method_config": {"fo_lr": 1e-3, "zo_enabled": False, "inner": {"k": 2}},
        "train": {"steps": 4, "precision": None},
    }
    assert trackers.hparams_of(spec) == {
        "method": "hizfo",
        "seed": 1,
        "phase": "tune",
        "method_config.fo_lr": 1e-3,
        "method_config.zo_enabled": False,
        "method_config.inner.k": 2,
        "train.steps": 4,
    }


def test_tensorboard_eval_points_log_their_numeric_fields(tmp_path):
    hook = trackers.TensorBoardTracker(tmp_path)
    state = LoopState(
        record=TrialRecord("t", "m", "task", "model", 0), total_steps=4, clock=TrainClock()
    )
    state.step = 4
    hook.on_eval_point(state, {"step": 2, "score": 0.25, "loss": 1.5, "split": "dev", "ok": True})
    hook.on_end(state)
    scalars = _scalars(tmp_path)
    assert scalars["eval/score"] == [(2, 0.25)] and scalars["eval/loss"] == [(2, 1.5)]
    assert not {"eval/split", "eval/ok", "eval/step"} & set(scalars)


def test_no_run_dir_no_tracking():
    assert trackers.tracker_hooks("tensorboard", None, "t", {}) == []


def test_unknown_or_missing_tracker_is_an_error(monkeypatch):
    with pytest.raises(trackers.TrackerError, match="unknown tracker 'mlflow'"):
        trackers.check_tracker("mlflow")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    with pytest.raises(trackers.TrackerError, match=r"pip install 'hizfo-bench\[wandb\]'"):
        trackers.check_tracker("wandb")


def test_cli_missing_tracker_package_exits_2_before_anything_runs(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboard" else real(name, *a),
    )
    out = tmp_path / "run"
    code = main(["run", "--suite", "smoke", "--out", str(out), "--tracker", "tensorboard"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs the 'tensorboard' package" in err[0]
    assert not out.exists()


def test_wandb_runs_offline_without_network(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)

    def no_network(*args, **kwargs):
        raise OSError("no route to host")

    monkeypatch.setattr(trackers.socket, "create_connection", no_network)
    assert trackers.wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert trackers.wandb_mode() is None  # wandb reads WANDB_MODE itself


def test_tracker_numbers_skip_non_finite_and_non_numeric():
    assert trackers._numbers({"a": 1, "b": float("nan"), "c": "x", "d": True, "e": 2.5}) == {
        "a": 1.0,
        "e": 2.5,
    }


class _FakeRun:
    def __init__(self, module, kwargs):
        self.kwargs, self.logged, self.summary, self.finished = kwargs, [], {}, False
        self.module = module

    def log(self, values, step):
        self.logged.append((step, dict(values)))

    def finish(self):
        self.finished = True
        self.module.run = None


def _fake_wandb():
    import types

    module = types.ModuleType("wandb")
    module.__spec__ = importlib.machinery.ModuleSpec("wandb", None)  # "installed"
    module.run = None
    module.runs = []

    def init(**kwargs):
        module.run = _FakeRun(module, kwargs)
        module.runs.append(module.run)
        return module.run

    module.init = init
    return module


def test_wandb_one_run_per_trial_grouped_by_run_dir(tmp_path, monkeypatch):
    import sys

    fake = _fake_wandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(trackers, "wandb_mode", lambda: "offline")
    run_dir = tmp_path / "mini-20260101"
    spec = TrialSpec(
        method="fo-adamw",
        task="math-mini",
        model="tiny",
        seed=0,
        method_config={"lr": 1e-3},
        train=TrainConfig(steps=4, batch_size=4, max_length=96, train_examples=32, log_every=2),
        eval=EvalConfig(limit=2, batch_size=2, max_gen_toks=4),
    )
    record = run_trial(spec, run_dir=run_dir, tracker="wandb")
    assert record["status"] == "ok", record["error"]
    trackers.log_result("wandb", run_dir, record)

    (run,) = fake.runs
    assert run.kwargs["group"] == "mini-20260101" and run.kwargs["name"] == spec.trial_id
    assert run.kwargs["mode"] == "offline" and run.kwargs["config"]["seed"] == 0
    losses = [(step, values["train/loss"]) for step, values in run.logged]
    assert losses == [(p["step"], p["loss"]) for p in record["curve"]]
    assert run.summary["final/steps"] == 4.0
    assert run.summary["test/score"] == record["score"] and run.summary["status"] == "ok"
    assert run.finished
