"""The report says when trials did not run the locked packages (environment.lock)."""

from __future__ import annotations

from helpers.records import make_record, write_run

from bench.report import write_report
from bench.report.index import environment_lines

LOCK = {"file": "requirements.lock", "sha1": "a" * 40, "differs": {}}


def _record(seed: int, lock: dict | None):
    env = {"device_name": "x86_64", **({"lock": lock} if lock is not None else {})}
    return make_record("fo-adamw", seed=seed, environment=env, digest=f"d{seed:07d}")


def test_locked_runs_say_nothing_and_others_say_which_packages(tmp_path):
    assert environment_lines([_record(0, LOCK), _record(1, LOCK), _record(2, None)]) == []
    moved = {**LOCK, "differs": {"torch": {"locked": "2.13.0", "installed": "2.12.1"}}}
    gone = {**LOCK, "sha1": "b" * 40, "differs": {"peft": {"locked": "0.17.1", "installed": None}}}
    lines = environment_lines([_record(0, LOCK), _record(1, moved), _record(2, gone)])
    assert lines == [
        "2 of 3 trials ran packages at other versions than requirements.lock pins: "
        "peft (locked 0.17.1, ran not installed); torch (locked 2.13.0, ran 2.12.1)",
        "the trials were made from 2 different requirements.lock files (SHA-1 aaaaaaaa, bbbbbbbb)",
    ]
    run = write_run(tmp_path / "run", [_record(0, LOCK), _record(1, moved)])
    write_report(run, plots=False)
    table = (run / "report" / "table.md").read_text()
    assert "Warning: 1 of 2 trials ran packages at other versions" in table
    clean = write_run(tmp_path / "clean", [_record(0, LOCK), _record(1, LOCK)])
    write_report(clean, plots=False)
    assert "requirements.lock" not in (clean / "report" / "table.md").read_text()
