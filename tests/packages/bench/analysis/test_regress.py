"""`hizfo-bench compare`: synthetic run dirs (store.write_trial), no training."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest
from helpers import REPO
from helpers.records import make_record, write_run

from bench import store
from bench.analysis import history, regress
from bench.analysis.timing import paired_step_times, step_times
from bench.cli import main
from bench.record import TrialRecord
from bench.report.compare import render_table

SUITE = [("none", 0.10, 0.0), ("fo-adamw", 0.40, 100.0), ("mezo", 0.30, 50.0)]


def reference_records(seeds=(0,)):
    return [
        make_record(m, seed=s, score=score, train_seconds=t) for m, score, t in SUITE for s in seeds
    ]


def run_pair(tmp_path, change=None, seeds=(0,)):
    """A reference run and a re-run of it, the re-run edited by `change(records)`."""
    ref = reference_records(seeds)
    cur = copy.deepcopy(ref)
    for r in cur:
        r.started_at = "2026-01-02T00:00:00+0000"
    if change:
        change(cur)
    return write_run(tmp_path / "ref", ref), write_run(tmp_path / "cur", cur)


def edit(method, **fields):
    def change(records):
        for r in records:
            if r.method == method:
                for name, value in fields.items():
                    setattr(r, name, value)

    return change


def verdict_of(ref, cur, **tol):
    return regress.compare(
        regress.load_records(ref), regress.load_records(cur), regress.Tolerances(**tol)
    )


def test_unchanged_rerun_passes(tmp_path, capsys):
    ref, cur = run_pair(tmp_path)
    assert main(["compare", str(ref), str(cur)]) == 0
    out = capsys.readouterr().out
    assert "PASS: 3 trials, no regression" in out
    verdict = json.loads((cur / "report" / "compare.json").read_text())
    assert verdict["verdict"] == "pass" and verdict["counts"] == {"ok": 3}
    assert verdict["match_by"] == "method+task+model+seed"


MACHINE = {"cpu_model": "Test CPU", "cpu_count": 2, "machine": "x86_64", "gpus": []}


def on_machine(records, key="m1", torch="2.13.0", threads=1):
    """Records stamped with a machine fingerprint, torch version and thread count."""
    for r in records:
        r.environment = {
            "machine": {**MACHINE, "cpu_model": f"Test CPU {key}"},
            "machine_key": key,
            "packages": {"torch": torch},
            "torch_threads": threads,
            "device": "cpu",
        }
    return records


def with_step_times(record, mean, spread=0.1, windows=20, seed=0, every=5):
    """A curve whose per-window step times are `mean` x (1 +- spread), reproducibly."""
    rng = random.Random(seed)
    seconds, curve = 0.0, []
    for i in range(1, windows + 1):
        seconds += every * mean * (1 + spread * (2 * rng.random() - 1))
        curve.append({"step": i * every, "loss": 3.0 - 0.01 * i, "seconds": seconds})
    record.curve, record.steps, record.train_seconds = curve, windows * every, seconds
    return record


def timed_run(path, mean, seed, key="m1"):
    records = on_machine(reference_records(), key)
    for i, r in enumerate(records):
        if r.method != "none":
            with_step_times(r, mean * (1 + i), seed=seed * 10 + i)
    return write_run(path, records)


def history_of(tmp_path, means=(0.010, 0.011, 0.0095), key="m1"):
    root = tmp_path / "history"
    for i, mean in enumerate(means):
        history.add_run(timed_run(tmp_path / f"h{i}", mean, seed=i, key=key), root, name=f"r{i}")
    return root


def test_slower_steps_are_flagged_against_this_machines_history(tmp_path, capsys):
    root = history_of(tmp_path)
    ref = timed_run(tmp_path / "ref", 0.010, seed=7)
    slow = timed_run(tmp_path / "slow", 0.010, seed=8)
    # mezo's step 1.5x slower in the current run
    for path in (slow / "trials").glob("mezo*.json"):
        record = TrialRecord.from_dict(json.loads(path.read_text()))
        path.write_text(json.dumps(with_step_times(record, 0.010 * 3 * 1.5, seed=9).to_dict()))
    out_json = tmp_path / "v.json"
    args = ["compare", str(ref), str(slow), "--history", str(root), "--json", str(out_json)]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "REGRESSION: 1 of 3 trials" in out
    line = next(x for x in out.splitlines() if x.startswith("  mezo/"))
    assert (
        "step time: p20" in line and "per step (wall), x1.4" in line and "Mann-Whitney p=" in line
    )
    assert "95% CI x1." in line
    verdict = json.loads(out_json.read_text())
    (bad,) = [t for t in verdict["trials"] if t["outcome"] == "regression"]
    check = next(c for c in bad["checks"] if c["figure"] == "step time")
    assert check["details"]["p_slower"] < 0.01 and check["details"]["interval"][0] > 1.25
    # an unchanged run of the same machine passes; so does the slow one with a coarser factor
    same = timed_run(tmp_path / "same", 0.010, seed=11)
    assert main(["compare", str(ref), str(same), "--history", str(root)]) == 0
    assert main(["compare", str(ref), str(slow), "--history", str(root), "--time-factor", "2"]) == 0
    assert main(["compare", str(ref), str(slow), "--history", str(root), "--ignore-time"]) == 0


def test_times_are_never_judged_against_another_machine(tmp_path, capsys):
    root = history_of(tmp_path, key="m1")
    ref = timed_run(tmp_path / "ref", 0.010, seed=7)
    # 3x slower, but on machine m2, which has no history: no verdict on time
    other = timed_run(tmp_path / "other", 0.030, seed=8, key="m2")
    assert main(["compare", str(ref), str(other), "--history", str(root)]) == 0
    out = capsys.readouterr().out
    assert "no earlier run of machine m2" in out and "history add RUN_DIR" in out
    assert "reference ran on machine m1" in out  # the different-machine warning
    v = verdict_of(ref, other)
    assert {t.check("step time").status for t in v.trials if t.check("step time")} == {
        "no baseline"
    }


def test_a_shift_within_the_history_spread_passes(tmp_path):
    # the history holds runs at 1.0x and 1.3x (load); a 1.3x run is no news
    root = history_of(tmp_path, means=(0.010, 0.013, 0.0105))
    ref = timed_run(tmp_path / "ref", 0.010, seed=7)
    cur = timed_run(tmp_path / "cur", 0.0135, seed=8)
    records = regress.load_records(cur)
    v = regress.compare(regress.load_records(ref), records, baseline=history.baselines(root, "m1"))
    assert v.passed, render_table(v)
    mezo = next(t for t in v.trials if t.key.startswith("mezo"))
    step = mezo.check("step time")
    assert step.status == "ok" and step.details["ratio"] > 1.2


def test_step_times_come_from_curve_windows():
    record = make_record("mezo", steps=20)
    record.curve = [
        {"step": 5, "loss": 1.0, "seconds": 9.0},  # first window: one-time costs, dropped
        {"step": 10, "loss": 1.0, "seconds": 10.0},
        {"step": 15, "loss": 1.0, "seconds": 12.0},
        {"step": 20, "loss": 1.0, "seconds": 12.5},
    ]
    assert step_times(record) == pytest.approx([0.2, 0.4, 0.1])
    perf = TrialRecord("perf-mezo", "mezo", "perf", "tiny", 0, step_seconds=[0.5, 0.6])
    assert step_times(perf) == [0.5, 0.6]


def test_step_times_compare_like_with_like_on_the_cpu_clock_when_all_have_it():
    def rec(cpu=True, device="cpu"):
        curve = [
            {
                "step": s,
                "loss": 1.0,
                "seconds": 2.0 * s,
                **({"cpu_seconds": 0.5 * s} if cpu else {}),
            }
            for s in (5, 10, 15, 20)
        ]
        return TrialRecord("t", "m", "t", "tiny", 0, curve=curve, environment={"device": device})

    current, runs, clock = paired_step_times(rec(), [rec(), rec()])
    assert clock == "cpu_seconds" and current == pytest.approx([0.5, 0.5, 0.5])
    assert runs == [pytest.approx([0.5] * 3)] * 2
    # one side without CPU times (a record made before them), or a GPU trial: wall for all
    assert paired_step_times(rec(), [rec(), rec(cpu=False)])[2] == "seconds"
    current, _, clock = paired_step_times(rec(device="cuda:0"), [rec(device="cuda:0")])
    assert clock == "seconds" and current == pytest.approx([2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="clock must be one of"):
        step_times(rec(), "ticks")


def test_history_add_files_runs_by_machine(tmp_path, capsys):
    run = write_run(tmp_path / "run", on_machine(reference_records(), "abc123"))
    root = tmp_path / "hist"
    assert main(["history", "add", str(run), "--root", str(root)]) == 0
    (dest,) = history.history_runs(root, "abc123")
    assert len(list((dest / "trials").glob("*.json"))) == 3
    assert json.loads((root / "abc123" / "machine.json").read_text())["cpu_model"]
    assert main(["history", "add", str(run), "--root", str(root)]) == 2  # already there
    assert main(["history", "list", "--root", str(root)]) == 0
    assert "abc123" in capsys.readouterr().out
    # records without a fingerprint cannot be filed
    bare = write_run(tmp_path / "bare", reference_records())
    assert main(["history", "add", str(bare), "--root", str(root)]) == 2
    # a run compared with a history that holds the run itself does not use it
    assert history.baselines(root, "abc123", exclude=dest) == {}


def test_memory_growth_is_flagged(tmp_path):
    ref, cur = run_pair(tmp_path, edit("fo-adamw", peak_memory_bytes=700 * 2**20))
    v = verdict_of(ref, cur)
    assert [t.key.split("/")[0] for t in v.regressions] == ["fo-adamw"]
    assert "peak memory: 512 MiB -> 700 MiB" in v.regressions[0].reasons[0]


@pytest.mark.parametrize(
    ("broken", "why"),
    [
        ({"status": "failed", "score": None, "error": "RuntimeError: CUDA error"}, "failed now"),
        ({"score": 0.0}, "score: 0.400 -> 0.000 (drop 0.400)"),
        ({"score": float("nan")}, "no score now (nan)"),
    ],
    ids=["failed", "score-zero", "score-nan"],
)
def test_injected_broken_method_is_flagged(tmp_path, capsys, broken, why):
    ref, cur = run_pair(tmp_path, edit("fo-adamw", **broken))
    assert main(["compare", str(ref), str(cur)]) == 1
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("fo-adamw/"))
    assert "REGRESSION" in line
    assert why in next(x for x in out.splitlines() if x.startswith("  fo-adamw/"))


def test_loss_tolerance_is_tight_on_one_platform_and_loose_across():
    """A fixed-seed CPU run repeats bit for bit on one platform: 0.05% is news there."""

    def pair(factor, **platform):
        ref = on_machine(reference_records())
        cur = on_machine(copy.deepcopy(ref), **platform)
        for r in cur:
            if r.method == "mezo":
                r.curve[-1]["loss"] *= factor
        return regress.compare(ref, cur)

    (t,) = pair(1.0005).regressions
    check = t.check("final training loss")
    assert "same platform" in check.evidence and "+0.05%" in check.change
    lower = pair(0.9995)  # lower on one platform: changed numerics, a warning only
    assert lower.passed and "losses changed on the same platform" in " ".join(lower.warnings)
    for other in ({"key": "m2"}, {"threads": 2}, {"torch": "2.14.0"}):
        assert pair(1.0005, **other).passed  # another platform: 1.05x + 0.02
        assert not pair(1.2, **other).passed


def test_wrong_sign_loss_and_dev_curve_are_flagged(tmp_path):
    def flat(records):
        for r in records:
            if r.method == "mezo":
                r.curve = [{**p, "loss": 3.0} for p in r.curve]

    ref, cur = run_pair(tmp_path, flat)
    v = verdict_of(ref, cur)
    (reason,) = v.regressions[0].reasons
    assert reason.startswith("final training loss: 2.0000 -> 3.0000 (+50.00%)")
    assert verdict_of(ref, cur, check_loss=False).passed
    ref, cur = run_pair(tmp_path / "b", edit("mezo", curve=[]))
    assert verdict_of(ref, cur).regressions[0].reasons == ["final training loss: no curve now"]

    dev = [{"step": 10, "dev_loss": 2.5}, {"step": 20, "dev_loss": 2.2}]
    worse = [{"step": 10, "dev_loss": 2.5}, {"step": 20, "dev_loss": 2.9}]
    ref, cur = run_pair(tmp_path / "c", edit("mezo", eval_curve=worse))
    ref_records = regress.load_records(ref)
    for r in ref_records:
        if r.method == "mezo":
            r.eval_curve = dev
    (t,) = regress.compare(ref_records, regress.load_records(cur)).regressions
    assert t.check("dev loss").change == "2.2000 -> 2.9000 (+31.82%) at step 20"


def test_more_passes_per_step_are_flagged(tmp_path):
    ref, cur = run_pair(tmp_path, edit("mezo", passes={"forward": 60, "backward": 0}))
    ref_records = regress.load_records(ref)
    for r in ref_records:
        r.passes = {"forward": 40, "backward": 0}
    v = regress.compare(ref_records, regress.load_records(cur))
    assert [t.reasons for t in v.regressions if t.key.startswith("mezo")] == [
        ["forward passes per step: 2 -> 3 (exact count)"]
    ]


def perf_record(method, **metrics):
    return make_record(
        method,
        task="perf",
        score=None,
        metrics=metrics,
        environment={"device": "cpu"},
        step_seconds=[0.1, 0.11, 0.1],
    )


def test_perf_ratios_are_guarded_on_their_own_record():
    ratios = {"mezo_step_over_two_forwards": 1.6, "hizfo_step_over_fo_step": 1.5}
    ref = [perf_record("mezo", **ratios), perf_record("hizfo", **ratios)]
    ok = [perf_record("mezo", **{**ratios, "mezo_step_over_two_forwards": 1.8}), ref[1]]
    assert regress.compare(ref, ok).passed  # +12.5%: inside the 25% spread of repeats
    slow = {**ratios, "mezo_step_over_two_forwards": 2.4}
    v = regress.compare(ref, [perf_record("mezo", **slow), perf_record("hizfo", **slow)])
    # flagged once, on the mezo record it is about, not on hizfo's copy of the ratio
    assert [t.key.split("/")[0] for t in v.regressions] == ["mezo"]
    assert "mezo_step_over_two_forwards: 1.600 -> 2.400 (+50.00%)" in v.regressions[0].reasons[0]


def test_operator_counts_are_guarded_exactly_under_the_same_torch():
    """ops_over_floor_ops is exact on any machine: one more operator call per step is a
    regression, the same count passes, and another torch version is not compared."""

    def rec(ops: float, torch: str = "2.13.0"):
        r = perf_record("mezo", mezo_ops_over_floor_ops=ops)
        r.environment = {"device": "cpu", "packages": {"torch": torch}}
        return r

    assert regress.compare([rec(1.25)], [rec(1.25)]).passed
    (t,) = regress.compare([rec(1.25)], [rec(1.2501)]).regressions
    assert "mezo_ops_over_floor_ops: 1.250 -> 1.250" in t.reasons[0]
    v = regress.compare([rec(1.25)], [rec(2.0, torch="2.14.0")])
    assert v.passed and "torch 2.13.0 vs 2.14.0" in str(v.to_dict())


def test_per_seed_score_tolerance_uses_both_trials_lm_eval_stderr(tmp_path):
    # stderr 0.05 in every record: the difference of two single-seed scores has stderr
    # sqrt(0.05^2 + 0.05^2) = 0.0707, threshold max(0.02, 2 x 0.0707) = 0.141
    ref, cur = run_pair(tmp_path, edit("fo-adamw", score=0.29))
    v = verdict_of(ref, cur)
    score = next(t for t in v.trials if t.key.startswith("fo-adamw")).check("score")
    assert score.details["stderr"] == pytest.approx(0.05 * 2**0.5)
    assert score.details["threshold"] == pytest.approx(0.1414, abs=1e-4)
    assert v.passed
    ref, cur = run_pair(tmp_path / "b", edit("fo-adamw", score=0.25))
    (t,) = verdict_of(ref, cur).regressions
    assert "stderr of the difference) = 0.141" in t.reasons[0]
    # without any stderr the absolute tolerance alone decides
    assert not verdict_of(ref, cur, abs_tol=0.0, k=0.0).passed
    assert verdict_of(ref, cur, abs_tol=0.2).passed


def test_seed_mean_is_compared_with_the_sem(tmp_path):
    """Per seed the lm-eval stderr is the noise; for the mean over seeds, the SEM."""

    def spread(records, shift=0.0):
        for r in records:
            if r.method == "mezo":
                r.score = 0.30 + 0.02 * r.seed - shift

    ref = reference_records(seeds=(0, 1, 2))
    spread(ref)
    cur = copy.deepcopy(ref)
    spread(cur, shift=0.08)  # every seed 0.08 lower: within each seed's 0.141
    v = regress.compare(ref, cur)
    assert not [t for t in v.trials if t.key.startswith("mezo/") and "/s" in t.key and t.regressed]
    (mean,) = v.regressions
    assert mean.key == "mezo/math-mini/tiny/mean"
    check = mean.check("mean score")
    assert check.details["sem"] == [pytest.approx(0.02 / 3**0.5)] * 2
    assert "0.320 -> 0.240 over 3 / 3 seeds (drop 0.080)" in mean.reasons[0]
    spread(cur, shift=0.01)
    assert regress.compare(ref, cur).passed


def test_missing_trial_is_a_regression_and_new_is_not(tmp_path, capsys):
    ref, cur = run_pair(tmp_path)
    (cur / "trials" / "mezo__math-mini__tiny__s0__abcd1234.json").unlink()
    store.write_trial(cur, make_record("lora"))
    assert main(["compare", str(ref), str(cur)]) == 1
    out = capsys.readouterr().out
    assert "MISSING" in out and "missing from current" in out
    assert next(x for x in out.splitlines() if x.startswith("lora/")).split()[1] == "new"


def test_config_change_matches_by_key_with_a_warning(tmp_path, capsys):
    def retuned(records):
        for r in records:
            r.trial_id = r.trial_id.replace("abcd1234", "ffff0000")
            r.config = {**r.config, "train": {"steps": 40}}

    ref, cur = run_pair(tmp_path, retuned)
    assert main(["compare", str(ref), str(cur)]) == 0
    out = capsys.readouterr().out
    assert "different config than the reference (train.steps)" in out
    # by exact trial id nothing matches: unusable
    assert main(["compare", str(ref), str(cur), "--match", "id"]) == 2


def test_failed_in_reference_is_not_a_regression(tmp_path):
    ref = reference_records()
    ref[2].status, ref[2].score = "failed", None
    write_run(tmp_path / "ref", ref)
    cur = reference_records()
    write_run(tmp_path / "cur", cur)
    v = verdict_of(tmp_path / "ref", tmp_path / "cur")
    assert v.passed and {t.outcome for t in v.trials} == {"ok", "fixed"}


def test_reference_as_a_single_json_file(tmp_path):
    ref_file = tmp_path / "reference.json"
    ref_file.write_text(json.dumps({"trials": [r.to_dict() for r in reference_records()]}))
    _, cur = run_pair(tmp_path)
    assert main(["compare", str(ref_file), str(cur)]) == 0


@pytest.mark.parametrize(
    "case", ["missing-dir", "no-trials", "schema", "not-a-trial", "bad-json", "other-suite"]
)
def test_unusable_input_exits_2(tmp_path, capsys, case):
    ref, cur = run_pair(tmp_path)
    if case == "missing-dir":
        cur = tmp_path / "does-not-exist"
    elif case == "no-trials":
        cur = tmp_path / "empty"
        (cur / "trials").mkdir(parents=True)
    elif case == "schema":
        path = next((cur / "trials").glob("*.json"))
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, "schema": store.SCHEMA + 1}))
    elif case == "not-a-trial":
        (cur / "trials" / "x.json").write_text(json.dumps({"hello": 1}))
    elif case == "bad-json":
        (cur / "trials" / "x.json").write_text("{not json")
    elif case == "other-suite":
        cur = write_run(tmp_path / "other", [make_record("mezo", task="other-task")])
    assert main(["compare", str(ref), str(cur)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hizfo-bench: error:")
    assert not (Path(cur) / "report" / "compare.json").exists()


def test_committed_nightly_reference_is_usable():
    """The reference the nightly CI job compares against loads and matches itself."""
    ref = REPO / "results" / "reference" / "nightly"
    records = regress.load_records(ref)
    assert {r.status for r in records} == {"ok"}
    assert regress.compare(records, copy.deepcopy(records)).passed


def test_same_platform_score_drop_is_flagged_though_within_stderr():
    ref = on_machine(reference_records())
    cur = on_machine(copy.deepcopy(ref))
    next(r for r in cur if r.method == "fo-adamw").score = 0.35  # within 0.141
    (t,) = regress.compare(ref, cur).regressions
    assert "same platform" in t.reasons[0]
    assert regress.compare(ref, on_machine(copy.deepcopy(cur), key="m2")).passed
