"""Claims verdicts follow from the numbers: trial files with known outcomes, each verdict."""

from __future__ import annotations

import json
import random
import zlib

import pytest
from helpers.records import make_record, write_run

from bench.analysis.claims import (
    CONTRADICTED,
    INCONCLUSIVE,
    MIXED,
    NOT_MEASURED,
    NOT_TESTABLE,
    ONE_SEED,
    SUPPORTED,
    ZO_OFF,
    combine,
    combine_parts,
    doc_outcomes,
    evaluate_claims,
)
from bench.report import write_report

N_DOCS = 200


def _samples(run_dir, record, p_correct, seed):
    rng = random.Random(seed)
    folder = run_dir / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{record.trial_id}.jsonl", "w") as f:
        for d in range(N_DOCS):
            f.write(json.dumps({"doc_id": d, "score": float(rng.random() < p_correct)}) + "\n")


def _trial(method, task, seed, p, *, ttt=None, sharp=None, train_seconds=100.0):
    digest = f"{abs(hash((method, task, seed))) % 10**8:08d}"
    extra = {"digest": digest, "eval_samples": N_DOCS}
    if ttt is not None:
        extra["time_to_target"] = {
            "target": "dev_loss <= final fo-adamw",
            "metric": "dev_loss",
            "value": 1.0,
            "reference": "fo-adamw",
            "reached": ttt is not False,
            "seconds": None if ttt is False else ttt,
            "censored_at": 400.0 if ttt is False else None,
            "budget": 400.0,
            "fixed_in_advance": True,
            "steps": 10,
            "forward": 10,
            "backward": 10,
        }
    if sharp is not None:
        extra["sharpness"] = {
            "random_direction": {"mean_rise": sharp},
            "hessian": {"top_eigenvalue": 10 * sharp},
        }
    return make_record(method, task, seed, score=p, train_seconds=train_seconds, **extra)


def _run(tmp_path, spec):
    """spec: (method, task) -> (p_correct per doc, ttt seconds per seed, sharpness per seed)."""
    records = []
    for (method, task), (p, ttts, sharps) in spec.items():
        for seed in range(3):
            r = _trial(
                method,
                task,
                seed,
                p,
                ttt=ttts[seed] if ttts else None,
                sharp=sharps[seed] if sharps else None,
            )
            records.append(r)
    write_run(tmp_path, records)
    for i, r in enumerate(records):
        p = spec[(r.method, r.task)][0]
        # Shared per-(task, seed) noise: documents are paired across methods.
        _samples(
            tmp_path,
            r,
            p,
            # crc32, not hash(): str hashes change with each process's PYTHONHASHSEED,
            # and the data (so the verdicts) must be the same on every run.
            seed=zlib.crc32(f"{r.task}/{r.seed}/{r.method if p != 0.5 else ''}".encode()) % 10**6
            + i * (p == 0.5),
        )
    return records


def _verdicts(tmp_path, records):
    claims = evaluate_claims(records, doc_outcomes(tmp_path))
    return {c.key: c for c in claims}


def test_supported_contradicted_and_inconclusive(tmp_path):
    spec = {
        # math: hizfo clearly better, faster, flatter than zo-off and better than it
        ("fo-adamw", "math-mini"): (0.2, [100, 110, 90], None),
        ("hizfo", "math-mini"): (0.6, [50, 52, 48], [0.01, 0.011, 0.012]),
        ("hizfo[zo-off]", "math-mini"): (0.3, None, [0.05, 0.052, 0.049]),
        # docstring: hizfo clearly worse; slower
        ("fo-adamw", "docstring-summary"): (0.6, [100, 100, 100], None),
        ("hizfo", "docstring-summary"): (0.2, [200, 210, 190], [0.02, 0.02, 0.021]),
        ("hizfo[zo-off]", "docstring-summary"): (0.2, None, [0.02, 0.021, 0.02]),
    }
    records = _run(tmp_path, spec)
    v = _verdicts(tmp_path, records)
    by_task = {c: {t.task: t.verdict for t in v[c].tasks} for c in v}
    assert by_task["accuracy"] == {"math-mini": SUPPORTED, "docstring-summary": CONTRADICTED}
    assert v["accuracy"].verdict == MIXED  # tasks disagree: neither way overall
    assert by_task["time"] == {"math-mini": SUPPORTED, "docstring-summary": CONTRADICTED}
    assert v["time"].verdict == MIXED
    assert by_task["stochasticity"]["math-mini"] == SUPPORTED
    # Equal sharpness and score with ZO on or off: no evidence either way.
    assert by_task["stochasticity"]["docstring-summary"] == INCONCLUSIVE
    assert v["stochasticity"].verdict == INCONCLUSIVE


def test_every_verdict_states_its_unit_and_prospective_power(tmp_path):
    spec = {
        ("fo-adamw", "math-mini"): (0.30, None, None),
        ("hizfo", "math-mini"): (0.33, None, None),
    }
    records = _run(tmp_path, spec)
    acc = _verdicts(tmp_path, records)["accuracy"]
    (task,) = acc.tasks
    assert task.verdict != CONTRADICTED  # a small true difference in favour: never against
    assert "3 seeds x 200 documents (t over seeds, 2 df)" in task.evidence[0]
    # Power for the declared 2 points, not for the observed difference.
    assert "80% power for a difference of 2 points needs" in task.power
    # Without the zo-off ablation or sharpness, claim 3 is not measured (never a guess).
    assert _verdicts(tmp_path, records)["stochasticity"].verdict == NOT_MEASURED


def test_time_without_targets_uses_train_time_for_equal_steps(tmp_path):
    records = [
        make_record("fo-adamw", seed=s, train_seconds=100.0 + s, digest=f"f{s}") for s in range(3)
    ]
    records += [
        make_record("hizfo", seed=s, train_seconds=60.0 + s, digest=f"h{s}") for s in range(3)
    ]
    time_claim = _verdicts(tmp_path, records)["time"]
    assert time_claim.verdict == SUPPORTED
    assert "train time ratio" in time_claim.tasks[0].evidence[0]


def test_combine_is_symmetric():
    assert combine([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert combine([CONTRADICTED, CONTRADICTED]) == CONTRADICTED
    assert combine([SUPPORTED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([CONTRADICTED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([SUPPORTED, CONTRADICTED]) == MIXED
    assert combine([SUPPORTED, NOT_MEASURED]) == INCONCLUSIVE
    assert combine([ONE_SEED, ONE_SEED]) == ONE_SEED
    assert combine([NOT_TESTABLE, NOT_TESTABLE]) == NOT_TESTABLE
    assert combine([]) == NOT_MEASURED
    assert combine_parts(SUPPORTED, SUPPORTED) == SUPPORTED
    assert combine_parts(CONTRADICTED, CONTRADICTED) == CONTRADICTED
    assert combine_parts(SUPPORTED, CONTRADICTED) == MIXED
    assert combine_parts(CONTRADICTED, INCONCLUSIVE) == INCONCLUSIVE
    assert combine_parts(SUPPORTED, INCONCLUSIVE) == INCONCLUSIVE


def test_report_writes_claims_md_with_the_verdicts(tmp_path):
    spec = {
        ("fo-adamw", "math-mini"): (0.2, [100, 110, 90], None),
        ("hizfo", "math-mini"): (0.6, [50, 52, 48], [0.01, 0.011, 0.012]),
        ("hizfo[zo-off]", "math-mini"): (0.3, None, [0.05, 0.052, 0.049]),
    }
    _run(tmp_path, spec)
    written = write_report(tmp_path)
    text = (tmp_path / "report" / "claims.md").read_text()
    assert "Claim 1: better accuracy than first-order fine-tuning | **supported**" in text
    assert "Claim 3" in text and "| hizfo | math-mini | tiny | 3 [0, 1, 2] | - |" in text
    assert any(p.name == "claims.png" for p in written)
    # The main table marks the zo-off row's difference from fo-adamw as significant or not.
    table = (tmp_path / "report" / "table.md").read_text()
    assert "†" in table or "hizfo[zo-off]" in table


@pytest.mark.parametrize("p_ref,p_new,expected", [(0.2, 0.8, SUPPORTED), (0.8, 0.2, CONTRADICTED)])
def test_accuracy_direction(tmp_path, p_ref, p_new, expected):
    records = _run(
        tmp_path,
        {
            ("fo-adamw", "math-mini"): (p_ref, None, None),
            ("hizfo", "math-mini"): (p_new, None, None),
        },
    )
    assert _verdicts(tmp_path, records)["accuracy"].verdict == expected


@pytest.mark.parametrize("seeds,expected", [(1, ONE_SEED), (3, CONTRADICTED)])
def test_never_reaching_the_target_needs_several_seeds_to_contradict(tmp_path, seeds, expected):
    records = []
    for s in range(seeds):
        records.append(_trial("fo-adamw", "math-mini", s, 0.5, ttt=100.0))
        records.append(_trial("hizfo", "math-mini", s, 0.5, ttt=False))
    assert _verdicts(tmp_path, records)["time"].verdict == expected


def _curve(losses):
    return [
        {"step": 4 * i, "seconds": 10.0 * i, "dev_loss": v, "forward": i, "backward": i}
        for i, v in enumerate(losses)
    ]


def test_one_seed_never_gives_a_verdict_and_says_why(tmp_path):
    # One seed, hizfo far worse on every document: still no "contradicted".
    records = [
        _trial("fo-adamw", "math-mini", 0, 0.8, ttt=100.0),
        _trial("hizfo", "math-mini", 0, 0.2, ttt=False),
    ]
    write_run(tmp_path, records)
    for i, r in enumerate(records):
        _samples(tmp_path, r, 0.8 if r.method == "fo-adamw" else 0.2, seed=i)
    v = _verdicts(tmp_path, records)
    assert v["accuracy"].verdict == ONE_SEED and v["time"].verdict == ONE_SEED
    assert "cannot include seed variance" in v["accuracy"].tasks[0].evidence[0]
    assert "cannot say" in v["accuracy"].tasks[0].power
    write_report(tmp_path)
    text = (tmp_path / "report" / "claims.md").read_text()
    assert "**One seed.**" in text
    assert "**contradicted**" not in text and "| contradicted |" not in text


def test_claim3_is_not_testable_when_zo_does_not_move_the_dev_loss(tmp_path):
    spec = {
        ("fo-adamw", "math-mini"): (0.5, None, None),
        ("hizfo", "math-mini"): (0.6, None, [0.01, 0.011, 0.012]),
        ("hizfo[zo-off]", "math-mini"): (0.3, None, [0.05, 0.052, 0.049]),
    }
    records = _run(tmp_path, spec)
    noise = {0: 1e-4, 1: -2e-4, 2: 1e-4}
    for r in records:
        if r.method.startswith("hizfo"):
            shift = noise[r.seed] if r.method == "hizfo" else 0.0
            r.eval_curve = _curve([2.0, 1.5 + shift, 1.2 + shift])
    claim3 = _verdicts(tmp_path, records)["stochasticity"]
    assert claim3.verdict == NOT_TESTABLE
    assert "did not change the dev loss beyond seed noise" in claim3.tasks[0].dose[-1]
    # The same run with a consistent ZO dose is tested on its parts.
    for r in records:
        if r.method == "hizfo":
            r.eval_curve = _curve([2.0, 1.4 + noise[r.seed], 1.1 + noise[r.seed]])
    claim3 = _verdicts(tmp_path, records)["stochasticity"]
    assert claim3.verdict == SUPPORTED
    assert claim3.tasks[0].parts == {"flatness": SUPPORTED, "score": SUPPORTED}
    write_run(tmp_path, records)
    write_report(tmp_path)
    text = (tmp_path / "report" / "claims.md").read_text()
    section = text[text.index("## Claim 3") :]
    assert section.index("ZO dose") < section.index("| task | model | verdict")


def test_two_settings_of_one_method_are_two_rows_not_seeds(tmp_path):
    records = [make_record("fo-adamw", seed=0, score=0.5, digest="a0")]
    other = make_record("fo-adamw", seed=0, score=0.1, digest="b0")
    other.config = {**other.config, "eval": {"limit": 4}}
    write_run(tmp_path, [*records, other])
    write_report(tmp_path)
    table = (tmp_path / "report" / "table.md").read_text()
    assert "fo-adamw{eval.limit=4}" in table and "Warning:" in table
    assert "| fo-adamw | **50.0** |" in table  # not averaged with the other setting


def test_the_dose_response_judges_every_rate_and_the_verdict_stays_hizfos(tmp_path):
    """hizfo at an inert zo_lr is not testable; hizfo[zo-lr=...] at a rate where the ZO
    part moves the dev loss gets claim 3's verdict at that rate, a sweep point that does
    not move it is not testable there: evidence beside the verdict, which stays hizfo's."""
    spec = {
        ("fo-adamw", "math-mini"): (0.5, None, None),
        ("hizfo", "math-mini"): (0.5, None, [0.02, 0.021, 0.02]),
        ("hizfo[zo-lr=1e-4]", "math-mini"): (0.8, None, [0.01, 0.011, 0.012]),
        ("hizfo[zo-lr=1e-5]", "math-mini"): (0.5, None, [0.02, 0.02, 0.021]),
        ("hizfo[zo-off]", "math-mini"): (0.5, None, [0.02, 0.02, 0.021]),
    }
    records = _run(tmp_path, spec)
    noise = {0: 1e-4, 1: -2e-4, 2: 1e-4}
    rates = {"hizfo": 1e-6, "hizfo[zo-lr=1e-4]": 1e-4, "hizfo[zo-lr=1e-5]": 1e-5}
    for r in records:
        if r.method.startswith("hizfo"):
            moved = -0.1 if r.method == "hizfo[zo-lr=1e-4]" else 0.0
            shift = 0.0 if r.method == "hizfo[zo-off]" else noise[r.seed] + moved
            r.eval_curve = _curve([2.0, 1.5 + shift, 1.2 + shift])
            r.config["method_config"] = {"zo_lr": rates.get(r.method, 1e-6)}
    claim3 = _verdicts(tmp_path, records)["stochasticity"]
    assert claim3.verdict == NOT_TESTABLE
    points = {p.method: p for p in claim3.sweep}
    assert [p.zo_lr for p in claim3.sweep] == [1e-6, 1e-5, 1e-4]  # by rate
    assert points["hizfo[zo-lr=1e-4]"].verdict.verdict == SUPPORTED
    assert points["hizfo[zo-lr=1e-4]"].dose.changed is True
    assert points["hizfo[zo-lr=1e-5]"].verdict.verdict == NOT_TESTABLE
    assert points["hizfo"].dose.power is not None  # the gate states its power, untested too
    write_run(tmp_path, records)
    write_report(tmp_path)
    text = (tmp_path / "report" / "claims.md").read_text()
    assert "### Dose-response" in text
    assert "| hizfo[zo-lr=1e-4] | 1.00e-04 |" in text
    assert (tmp_path / "report" / "plots" / "dose_response.png").is_file()


def test_the_gate_is_one_final_point_statistic_with_its_power(tmp_path):
    """The gate reads the last evaluation point only: a dose at an earlier point that is
    gone by the end does not open it; a consistent final dose does, and its line gives
    the estimate, its interval and the power for the declared dose."""
    spec = {
        ("fo-adamw", "math-mini"): (0.5, None, None),
        ("hizfo", "math-mini"): (0.5, None, [0.02, 0.021, 0.02]),
        ("hizfo[zo-off]", "math-mini"): (0.5, None, [0.02, 0.02, 0.021]),
    }
    records = _run(tmp_path, spec)
    noise = {0: 1e-4, 1: -2e-4, 2: 1e-4}
    for r in records:
        if r.method == "hizfo":
            r.eval_curve = _curve([2.0, 1.3 + noise[r.seed], 1.2 + noise[r.seed]])
        elif r.method == "hizfo[zo-off]":
            r.eval_curve = _curve([2.0, 1.5, 1.2])
    claim3 = _verdicts(tmp_path, records)["stochasticity"]
    assert claim3.verdict == NOT_TESTABLE  # step 4 moved, step 8 (the last) did not
    dose = "\n".join(claim3.tasks[0].dose)
    assert "at step 8, the primary statistic" in dose and "the gate's power for a dose" in dose
    assert "earlier points, shown, not tested: step 4" in dose
    for r in records:
        if r.method == "hizfo":
            r.eval_curve = _curve([2.0, 1.5, 1.15 + noise[r.seed]])
    assert _verdicts(tmp_path, records)["stochasticity"].tasks[0].dose[-1] == (
        "the ZO part changed the dev loss beyond seed noise"
    )


def test_a_zo_rate_below_the_declared_minimum_is_left_out_of_the_overall_verdict(tmp_path):
    """docstring-summary tuned to zo_lr 3e-9 (off in effect) no longer caps claim 3: its
    row says so and the overall verdict is math-mini's (issue 30)."""
    spec = {}
    for task in ("math-mini", "docstring-summary"):
        spec[("fo-adamw", task)] = (0.5, None, None)
        spec[("hizfo", task)] = (0.6, None, [0.01, 0.011, 0.012])
        spec[("hizfo[zo-off]", task)] = (0.3, None, [0.05, 0.052, 0.049])
    records = _run(tmp_path, spec)
    noise = {0: 1e-4, 1: -2e-4, 2: 1e-4}
    for r in records:
        if r.method.startswith("hizfo"):
            on = r.method == "hizfo" and r.task == "math-mini"
            shift = -0.1 + noise[r.seed] if on else 0.0
            r.eval_curve = _curve([2.0, 1.5 + shift, 1.2 + shift])
            rate = 3e-9 if r.task == "docstring-summary" else 1e-4
            r.config["method_config"] = {"zo_lr": rate}
    claim3 = _verdicts(tmp_path, records)["stochasticity"]
    by_task = {t.task: t.verdict for t in claim3.tasks}
    assert by_task == {"math-mini": SUPPORTED, "docstring-summary": ZO_OFF}
    assert claim3.verdict == SUPPORTED
    # The same docstring-summary at an active rate that did not move: inconclusive overall.
    for r in records:
        if r.task == "docstring-summary" and r.method.startswith("hizfo"):
            r.config["method_config"] = {"zo_lr": 1e-4}
    assert _verdicts(tmp_path, records)["stochasticity"].verdict == INCONCLUSIVE


def test_claims_md_says_how_big_each_ablations_fo_set_is(tmp_path):
    """hizfo[reverse] trained about 0.6x hizfo's FO parameters on SmolLM2: claims.md says
    so beside hizfo[random]'s same-size set (issue 30)."""
    spec = {
        ("fo-adamw", "math-mini"): (0.5, None, None),
        ("hizfo", "math-mini"): (0.5, None, None),
        ("hizfo[random]", "math-mini"): (0.5, None, None),
        ("hizfo[reverse]", "math-mini"): (0.5, None, None),
    }
    records = _run(tmp_path, spec)
    fo = {"hizfo": 1000, "hizfo[random]": 950, "hizfo[reverse]": 600}
    for r in records:
        if r.method in fo:
            r.method_summary = {"fo_parameters": fo[r.method]}
    write_run(tmp_path, records)
    write_report(tmp_path)
    text = (tmp_path / "report" / "claims.md").read_text()
    assert "hizfo[random] 0.95x, hizfo[reverse] 0.60x" in text
