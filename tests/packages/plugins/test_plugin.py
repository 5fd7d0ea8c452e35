"""The example plugin (examples/zo-signsgd): installed as its own distribution, found
through the entry-point group only, run through a suite, present in the results table."""

from __future__ import annotations

import importlib.util
import os
import shutil
import site
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from helpers import REPO

from bench import registry, report, store
from bench.orchestrate.sweep import run_sweep
from bench.registry import MethodError, load_method
from bench.suite import expand

EXAMPLE = REPO / "examples" / "zo-signsgd"
SUITE = {
    "models": ["tiny"],
    "tasks": ["math-mini"],
    "methods": {"zo-signsgd": {"config": {"lr": 5e-3}}},
    "seeds": [0],
    # One fixed batch of 4, as tests/packages/bench/train/test_trial.py, so the loss visibly drops.
    "train": {"steps": 60, "batch_size": 4, "max_length": 96, "train_examples": 4, "log_every": 10},
    "eval": {"limit": 4, "batch_size": 4, "max_gen_toks": 8},
}


@pytest.fixture(scope="session")
def zo_signsgd_installed(tmp_path_factory):
    """Install the example plugin into a folder of its own (pip --target, as the plugin
    guide's test does), never into the running venv; yields that folder.

    The folder goes first on this process's sys.path (entry points are found there) and
    on the Ray workers' PYTHONPATH (the sweep's per-task environment), so both see the
    plugin while the venv stays as it was. Built from a copy, so no build/ or egg-info
    lands in the source tree; offline when the venv has setuptools (--no-index, --no-deps,
    no build isolation).
    """
    from bench.orchestrate import session

    root = tmp_path_factory.mktemp("plugin")
    src, target = root / EXAMPLE.name, root / "site"
    shutil.copytree(
        EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target)]
    cmd += ["--disable-pip-version-check", "-q"]
    if importlib.util.find_spec("setuptools") is not None:
        cmd += ["--no-index", "--no-build-isolation"]
    # else (venvs of Python >= 3.12 ship without setuptools): pip fetches the build
    # backend into an isolated build environment, which needs the package index.
    done = subprocess.run([*cmd, str(src)], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.fail(f"installing {EXAMPLE} failed:\n{done.stdout}\n{done.stderr}")
    worker_env = session._worker_env
    path = os.pathsep.join(p for p in (str(target), os.environ.get("PYTHONPATH", "")) if p)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(target))
        mp.setattr(session, "_worker_env", lambda: {**worker_env(), "PYTHONPATH": path})
        registry._entry_points.cache_clear()
        # An earlier test may have imported the example from its source folder.
        sys.modules.pop("zo_signsgd", None)
        importlib.invalidate_caches()
        yield target
        sys.modules.pop("zo_signsgd", None)
    registry._entry_points.cache_clear()


def test_plugin_registers_through_its_own_distribution(zo_signsgd_installed):
    ep = registry._entry_points()["zo-signsgd"]
    assert ep.value == "zo_signsgd:ZOSignSGD"
    assert ep.dist is not None and ep.dist.name == "hizfo-bench-zo-signsgd"
    cls = load_method("zo-signsgd")
    assert cls.__module__ == "zo_signsgd"
    # From the temporary target; the running venv never gets it.
    assert Path(sys.modules["zo_signsgd"].__file__).is_relative_to(zo_signsgd_installed)
    venv = [Path(p) for p in [*site.getsitepackages(), site.getusersitepackages()]]
    assert not [p for p in venv if (p / "zo_signsgd").exists() or [*p.glob("*zo_signsgd*")]]


@pytest.mark.integration
def test_plugin_runs_through_a_suite_into_the_table(zo_signsgd_installed, ray_cluster, tmp_path):
    specs = expand(SUITE)
    (trial,) = run_sweep(specs, tmp_path, progress=False).records
    record = trial.to_dict()
    assert record["status"] == "ok", record["error"]
    assert record["passes"] == {"forward": 120, "backward": 0}
    first, last = record["curve"][0]["loss"], record["curve"][-1]["loss"]
    assert last < first - 0.05, record["curve"]

    table = report.summary_table(store.load_frame(tmp_path))
    row = next(line for line in table.splitlines() if line.startswith("| zo-signsgd |"))
    assert row.endswith("| ok |") and "| math-mini | tiny | 1 |" in row


class _ConfigNotADataclass:
    config_class = dict
    trains = True

    def setup(self, model, ctx): ...
    def step(self, batch, step): ...
    def trainable_parameters(self): ...
    def state_dict(self): ...
    def summary(self): ...


def test_plugin_with_a_non_dataclass_config_is_named(monkeypatch):
    # tests/packages/bench/test_registry.py covers import failures and missing attributes.
    eps = dict(registry._entry_points())
    eps["dict-config"] = EntryPoint(
        name="dict-config", value=f"{__name__}:_ConfigNotADataclass", group=registry.GROUP
    )
    monkeypatch.setattr(registry, "_entry_points", lambda: eps)
    with pytest.raises(MethodError, match="plugin 'dict-config'.*config_class must be a dataclass"):
        load_method("dict-config")
