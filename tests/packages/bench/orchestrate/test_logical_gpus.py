"""The GPU sweep's scheduling proven without a GPU: Ray with two logical GPUs
(`ray.init(num_gpus=2)`) on the CPU box, through the suite's own path (run_sweep ->
bench/orchestrate/session.py). Two one-GPU trials run at once, each on its own
CUDA_VISIBLE_DEVICES, which the record's `worker` says; a trial asking for two GPUs
(resources.gpus: 2) waits until both are free and then sees both."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from helpers.plugins import install_plugin
from helpers.specs import make_spec

from bench import store
from bench.orchestrate import session
from bench.orchestrate.sweep import run_sweep
from bench.spec import ResourcesConfig

# A method that never trains: at construction it notes what it was given (its
# CUDA_VISIBLE_DEVICES, the time) in `folder`, and a "holder" then keeps its trial (and
# so its GPU) until the file `release` exists, or 120 s.
_PLUGIN = """
import json
import os
import time
from dataclasses import dataclass


@dataclass
class GpuProbeConfig:
    folder: str = ""
    name: str = ""
    hold: bool = False


class GpuProbe:
    config_class = GpuProbeConfig
    trains = False

    def __init__(self, config):
        self.config = config
        seen = {"cvd": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": time.time()}
        with open(os.path.join(config.folder, config.name + ".json"), "w") as f:
            json.dump(seen, f)
        release = os.path.join(config.folder, "release")
        deadline = time.time() + 120
        while config.hold and not os.path.exists(release) and time.time() < deadline:
            time.sleep(0.1)

    def setup(self, model, ctx):
        return model

    def step(self, batch, step):
        raise AssertionError("does not train")

    def trainable_parameters(self):
        return []

    def state_dict(self):
        return {}

    def summary(self):
        return {}
"""


@pytest.fixture
def logical_gpus():
    """A local Ray cluster of 2 CPUs and 2 logical GPUs for this test; the session's
    CPU-only cluster (tests/conftest.py) comes back afterwards if it was up."""
    import ray

    was_up = ray.is_initialized()
    if was_up:
        ray.shutdown()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    if was_up:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


def _probe(folder: Path, name: str, *, hold: bool, gpus: int = 1, limit: int = 2):
    config = {"folder": str(folder), "name": name, "hold": hold}
    return make_spec(
        "gpu-probe",
        config,
        steps=0,
        limit=limit,
        eval_batch_size=1,
        max_gen_toks=2 if limit > 1 else 1,
        resources=ResourcesConfig(gpus=gpus),
    )


@pytest.mark.integration
def test_one_gpu_each_and_a_two_gpu_trial_waits_for_both(logical_gpus, tmp_path, monkeypatch):
    plugins, seen = tmp_path / "plugins", tmp_path / "seen"
    seen.mkdir()
    install_plugin(plugins, "hizfo_gpu_probe", "gpu-probe", "GpuProbe", _PLUGIN)
    worker_env = session._worker_env()
    worker_env["PYTHONPATH"] = os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setattr(session, "_worker_env", lambda: worker_env)
    # The one-GPU trials cost more (more test documents), so they are submitted first
    # (longest first) and take both GPUs; the two-GPU trial is queued behind them.
    a, b = _probe(seen, "a", hold=True), _probe(seen, "b", hold=True)
    both = _probe(seen, "both", hold=False, gpus=2, limit=1)

    observed: dict[str, object] = {}

    def release_when_both_hold() -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            if (seen / "a.json").exists() and (seen / "b.json").exists():
                time.sleep(3)  # the two-GPU trial had time to start, were it allowed to
                observed["two_gpu_trial_started_meanwhile"] = (seen / "both.json").exists()
                break
            time.sleep(0.1)
        observed["released_at"] = time.time()
        (seen / "release").touch()

    watcher = threading.Thread(target=release_when_both_hold, daemon=True)
    watcher.start()
    run_sweep([a, b, both], tmp_path / "run", progress=False)
    watcher.join(timeout=10)

    records = {r.trial_id: r for r in store.read_trials(tmp_path / "run")}
    assert all(r.status == "ok" for r in records.values()), records
    probes = {n: json.loads((seen / f"{n}.json").read_text()) for n in ("a", "b", "both")}
    # Two one-GPU trials at once: each its own device, and the record says which.
    assert sorted([probes["a"]["cvd"], probes["b"]["cvd"]]) == ["0", "1"]
    for name, spec in (("a", a), ("b", b)):
        worker = records[spec.trial_id].worker
        assert worker["cuda_visible_devices"] == probes[name]["cvd"]
        assert worker["gpu_ids"] == [probes[name]["cvd"]]
        assert worker["assigned_resources"]["GPU"] == 1
    # The two-GPU trial waited while both were held, then got both.
    assert observed["two_gpu_trial_started_meanwhile"] is False
    assert probes["both"]["start"] >= observed["released_at"]
    worker = records[both.trial_id].worker
    assert sorted(worker["cuda_visible_devices"].split(",")) == ["0", "1"]
    assert sorted(worker["gpu_ids"]) == ["0", "1"]
    assert worker["assigned_resources"]["GPU"] == 2
