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
# CUDA_VISIBLE_DEVICES, the time) in `folder`, then keeps its trial (and so its GPUs)
# until the file `release-<name>` exists, or 120 s.
_PLUGIN = """
import json
import os
import time
from dataclasses import dataclass


@dataclass
class GpuProbeConfig:
    folder: str = ""
    name: str = ""


class GpuProbe:
    config_class = GpuProbeConfig
    trains = False

    def __init__(self, config):
        self.config = config
        seen = {"cvd": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": time.time()}
        with open(os.path.join(config.folder, config.name + ".json"), "w") as f:
            json.dump(seen, f)
        release = os.path.join(config.folder, "release-" + config.name)
        deadline = time.time() + 120
        while not os.path.exists(release) and time.time() < deadline:
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
    """A local Ray cluster of 4 logical CPUs and 2 logical GPUs for this test (CPUs to
    spare, so that only the GPUs can keep a trial waiting); the session's CPU-only
    cluster (tests/conftest.py) comes back afterwards if it was up."""
    import ray

    was_up = ray.is_initialized()
    if was_up:
        ray.shutdown()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    if was_up:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


def _probe(folder: Path, name: str, *, gpus: int = 1, limit: int = 2):
    config = {"folder": str(folder), "name": name}
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
    a, b = _probe(seen, "a"), _probe(seen, "b")
    both = _probe(seen, "both", gpus=2, limit=1)
    observed: dict[str, object] = {}

    def started(*names: str) -> bool:
        return all((seen / f"{n}.json").exists() for n in names)

    def wait_for(*names: str) -> None:
        deadline = time.time() + 300
        while not started(*names) and time.time() < deadline:
            time.sleep(0.05)

    def release(*names: str) -> None:
        for n in names:
            (seen / f"release-{n}").touch()

    def referee() -> None:
        """Ray may start either shape first (all three are queued at once); whichever
        holds the GPUs, the other shape must wait until it lets them go."""
        deadline = time.time() + 300
        while not (started("a") or started("b") or started("both")) and time.time() < deadline:
            time.sleep(0.05)
        observed["first"] = "both" if started("both") else "one-gpu"
        if started("both"):
            time.sleep(3)  # a one-GPU trial had time to start, were it allowed to
            observed["overlap"] = started("a") or started("b")
            release("both")
            wait_for("a", "b")  # then both one-GPU trials, at once (each holds)
        else:
            wait_for("a", "b")
            time.sleep(3)  # the two-GPU trial had time to start, were it allowed to
            observed["overlap"] = started("both")
        observed["two_at_once"] = started("a", "b")
        release("a", "b", "both")

    watcher = threading.Thread(target=referee, daemon=True)
    watcher.start()
    # One CPU per GPU: the two-GPU trial asks for 2 of the 4 CPUs, so the CPUs alone
    # would let it run beside a one-GPU trial; only the GPUs stop it.
    run_sweep([a, b, both], tmp_path / "run", cpus_per_trial=1, progress=False)
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
    # Never a one-GPU and the two-GPU trial at once, in whichever order Ray took them.
    assert observed["two_at_once"] is True and observed["overlap"] is False, observed
    worker = records[both.trial_id].worker
    assert sorted(worker["cuda_visible_devices"].split(",")) == ["0", "1"]
    assert sorted(worker["gpu_ids"]) == ["0", "1"]
    assert worker["assigned_resources"]["GPU"] == 2
