"""The Ray runner: resource planning, a small suite through Ray, failures, resume."""

import json

import pytest
from helpers.records import make_record

from bench import store
from bench.cli import main
from bench.orchestrate.session import ResourceError, Resources, plan_resources
from bench.orchestrate.sweep import Sweep, run_sweep
from bench.record import TrialRecord
from bench.suite import expand

SUITE = {
    "models": ["tiny"],
    "tasks": ["math-mini"],
    "methods": {"none": {}, "fo-adamw": {"config": {"lr": 1e-3}}, "mezo": {}},
    "seeds": [0],
    "train": {"steps": 4, "batch_size": 4, "max_length": 96, "train_examples": 32, "log_every": 2},
    "eval": {"limit": 4, "batch_size": 4, "max_gen_toks": 8},
}


# ---- resource planning (fake clusters) -----------------------------------------------


def test_cpu_cluster_gives_cpu_slots():
    assert plan_resources({"CPU": 2.0, "memory": 1e9}, None) == Resources(0, 1, 2)
    assert plan_resources({"CPU": 16.0}, 4) == Resources(0, 4, 4)


def test_gpu_cluster_gives_one_trial_per_gpu():
    res = plan_resources({"CPU": 32.0, "GPU": 8.0}, None)
    assert (res.num_gpus, res.num_cpus, res.slots) == (1, 4, 8)


def test_multi_node_plan_fits_the_tightest_gpu_node():
    nodes = [
        {"CPU": 16.0, "GPU": 8.0},  # 2 CPUs per GPU
        {"CPU": 64.0, "GPU": 4.0},  # 16 CPUs per GPU
        {"CPU": 96.0},  # CPU-only node: not used when GPUs exist
    ]
    res = plan_resources(nodes, None)
    # A cluster-wide CPU/GPU ratio (176 / 12 = 14) would fit only one trial on node 1.
    assert (res.num_gpus, res.num_cpus, res.slots) == (1, 2, 12)
    res = plan_resources(nodes, 8)
    assert res.slots == 2 + 4  # node 1 holds only two trials of 8 CPUs each
    cpu_only = plan_resources([{"CPU": 8.0}, {"CPU": 6.0}], 4)
    assert (cpu_only.num_gpus, cpu_only.slots) == (0, 3)


def test_impossible_request_is_an_error_not_a_hang():
    with pytest.raises(ResourceError, match="largest node has 2 CPUs"):
        plan_resources({"CPU": 2.0}, 3)
    with pytest.raises(ResourceError, match="largest GPU node"):
        plan_resources([{"CPU": 4.0, "GPU": 1.0}], 8)


def _timed(seconds: float) -> TrialRecord:
    return TrialRecord("t", "m", "t", "tiny", 0, total_seconds=seconds)


def test_overhead_is_wall_against_trial_time_over_parallelism():
    sweep = Sweep(
        records=[_timed(10.0), _timed(20.0), _timed(30.0)],
        slots=2,
        wall_seconds=40.0,
        startup_seconds=5.0,
    )
    over = sweep.overhead()
    assert over["ideal_seconds"] == 30.0 and over["critical_path_seconds"] == 30.0
    assert over["overhead_seconds"] == 10.0 and over["overhead_fraction"] == 0.25
    one = Sweep(records=[_timed(10.0)], slots=8, wall_seconds=12.0)
    assert one.overhead()["parallelism"] == 1
    assert Sweep().overhead() is None
    # attempts lost to dead workers are in the figures (their time is in no total_seconds)
    lost = Sweep(records=[_timed(10.0)], slots=1, wall_seconds=20.0)
    lost.lost_attempts, lost.lost_seconds = 1, 8.0
    assert (lost.overhead()["lost_attempts"], lost.overhead()["lost_seconds"]) == (1, 8.0)
    assert over["lost_attempts"] == 0


# ---- through Ray ---------------------------------------------------------------------


@pytest.mark.integration
def test_suite_through_ray_writes_contract_files(ray_cluster, tmp_path):
    # fo-adamw with grad_accumulation 3 on batches of 4 passes validation and raises in
    # its first step, inside the worker: a real plugin-style failure.
    suite = {**SUITE, "methods": {**SUITE["methods"], "fo-adamw": {"config": {"lr": 1e-3}}}}
    good = expand(suite)
    broken = expand({**SUITE, "methods": {"fo-adamw": {"config": {"grad_accumulation": 3}}}})
    specs = good + broken

    sweep = run_sweep(specs, tmp_path, progress=False)
    assert ray_cluster.is_initialized()  # a session we did not start stays up
    assert len(sweep.records) == 4 and sweep.slots == 2
    files = sorted((tmp_path / "trials").glob("*.json"))
    assert [f.stem for f in files] == sorted(s.trial_id for s in specs)
    records = {r["trial_id"]: r for r in (json.loads(f.read_text()) for f in files)}
    for spec in good:
        record = records[spec.trial_id]
        assert set(store.REQUIRED_FIELDS) <= set(record)
        assert record["schema"] == store.SCHEMA and record["status"] == "ok", record["error"]
        assert record["environment"]["torch_threads"] == 1  # one CPU slot per trial
        assert record["total_seconds"] >= record["train_seconds"] + record["eval_seconds"]
        assert record["worker"]["assigned_resources"] == {"CPU": 1.0}
        # The worker's side files: the trial's log and lm-eval's per-document records.
        log = (tmp_path / "logs" / f"{spec.trial_id}.log").read_text()
        assert f"{spec.trial_id} loaded in" in log and f"{spec.trial_id} done: score" in log
        samples = [json.loads(x) for x in (tmp_path / "samples" / f"{spec.trial_id}.jsonl").open()]
        assert [x["doc_id"] for x in samples] == list(range(SUITE["eval"]["limit"]))
        assert sum(x["score"] for x in samples) / len(samples) == pytest.approx(record["score"])
    # Workers serve several trials: 4 trials on 2 slots take fewer than 4 processes, and
    # each worker counts the trials it served (1, 2, ... per pid).
    workers = [records[s.trial_id]["worker"] for s in specs]
    pids = [w["pid"] for w in workers]
    assert len(set(pids)) < len(pids)
    for pid in set(pids):
        served = sorted(w["trials_served"] for w in workers if w["pid"] == pid)
        assert served == list(range(1, len(served) + 1))
    reused = [w for w in workers if w["trials_served"] > 1]
    # A reused worker has its imports done: the second trial does not pay them again.
    first_import = max(w["import_seconds"] for w in workers if w["trials_served"] == 1)
    assert all(w["import_seconds"] < first_import for w in reused)
    # Each trial's log holds its own lines only, whichever process ran it.
    for spec in specs:
        log = (tmp_path / "logs" / f"{spec.trial_id}.log").read_text()
        others = [s.trial_id for s in specs if s.trial_id != spec.trial_id]
        assert not any(other in log for other in others), spec.trial_id
    # Longest first: the zero-shot trial (no training) was submitted, so started, last.
    none_id = next(s.trial_id for s in good if s.method == "none")
    started = {tid: r["started_at"] for tid, r in records.items()}
    assert started[none_id] == max(started.values())
    failed = records[broken[0].trial_id]
    assert failed["status"] == "failed" and failed["score"] is None
    assert "not divisible by grad_accumulation 3" in failed["error"]
    failed_log = (tmp_path / "logs" / f"{failed['trial_id']}.log").read_text()
    assert "not divisible by grad_accumulation 3" in failed_log  # the reason, in its log
    assert not (tmp_path / "samples" / f"{failed['trial_id']}.jsonl").exists()
    assert not list((tmp_path / "trials").glob(".*"))  # no temp files left behind
    over = sweep.overhead()
    assert over["parallelism"] == 2 and over["wall_seconds"] > over["startup_seconds"]

    # resume: finished trials are skipped, the failed one runs again
    again = run_sweep(specs, tmp_path, progress=False)
    assert again.skipped == 3 and [r.trial_id for r in again.records] == [broken[0].trial_id]
    frame = store.load_frame(tmp_path)
    assert set(frame["method"]) == {"none", "fo-adamw", "mezo"} and len(frame) == 4


def test_cli_bad_suite_is_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [tiny]\ntasks: [nope]\nmethods: [none]\n")
    assert main(["run", "--suite", str(bad), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown task 'nope'" in err[0]
    assert not (tmp_path / "run").exists()


def test_cli_dry_run_lists_trials_and_runs_nothing(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text(json.dumps(SUITE))  # JSON is YAML
    specs = expand(SUITE)
    out = tmp_path / "run"
    # A finished trial file that keeps the contract (an all-None one is re-run, not done).
    store.write_trial(out, make_record("none", seed=0).to_dict() | {"trial_id": specs[0].trial_id})
    assert main(["run", "--suite", str(suite), "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("suite s: 3 trials")
    assert f"  [done] {specs[0].trial_id}" in lines
    assert {f"  [todo] {s.trial_id}" for s in specs[1:]} <= set(lines)
    assert len(list((out / "trials").iterdir())) == 1
