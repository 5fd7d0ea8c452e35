"""The trial contract enforced on read: one check (bench.record.validate_record) used by
report, compare, resume and show. A file that breaks it is named with its field, skipped by
report (counted in its header), run again by resume and refused by compare; a newer schema
is refused by all of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.records import make_record

from bench import store
from bench.cli import main
from bench.record import ContractError, validate_record

GOOD = "fo-adamw__math-mini__tiny__s0__abcd1234"


def _broken(**change) -> dict:
    record = make_record("fo-adamw", digest="bad00000").to_dict()
    for key, value in change.items():
        if value is _DROP:
            del record[key]
        else:
            record[key] = value
    return record


_DROP = object()

BREAKS = {  # the reproductions of issue 31, and what the error names
    "status 5": ({"status": 5}, "field 'status'"),
    "memory a list": ({"memory": [1, 2]}, "field 'memory'"),
    "no score": ({"score": _DROP}, "field 'score' is missing"),
    "garbage score": ({"score": "garbage"}, "field 'score'"),
    "garbage steps": ({"steps": "many"}, "field 'steps'"),
    "curve of numbers": ({"curve": [1, 2]}, "field 'curve'"),
    "seed true": ({"seed": True}, "field 'seed'"),
}


def _run(tmp_path: Path, broken: dict | None = None) -> Path:
    run = tmp_path / "run"
    store.write_trial(run, make_record("fo-adamw"))
    if broken is not None:
        path = store.trials_dir(run) / f"{broken['trial_id']}.json"
        path.write_text(json.dumps(broken))
    return run


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_a_record_that_breaks_the_contract_is_named_with_its_field(case: str) -> None:
    change, named = BREAKS[case]
    with pytest.raises(ContractError, match=named):
        validate_record(_broken(**change))


def test_a_good_record_passes_and_keeps_unknown_fields() -> None:
    record = make_record("fo-adamw").to_dict() | {"added_by_hand": [1]}
    assert validate_record(record).extra == {"added_by_hand": [1]}


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_resume_never_trusts_a_broken_ok_file(tmp_path: Path, case: str) -> None:
    run = _run(tmp_path, _broken(**BREAKS[case][0]))
    assert store.finished_ids(run) == {GOOD}  # the broken one is run again
    files = store.read_run(run)
    assert [r.trial_id for r in files.records] == [GOOD]
    (line,) = files.skipped
    assert "bad00000.json" in line and BREAKS[case][1] in line


def test_a_newer_schema_is_refused_in_one_line_naming_the_version(tmp_path: Path) -> None:
    run = _run(tmp_path, _broken(schema=999))
    with pytest.raises(ContractError, match="schema 999 is newer .*schema 1") as info:
        store.finished_ids(run)
    assert info.value.newer and "\n" not in str(info.value)


def test_report_skips_broken_files_and_counts_them_in_its_header(tmp_path: Path, capsys) -> None:
    run = _run(tmp_path, _broken(status=5))
    store.write_trial(run, make_record("fo-adamw", digest="memory00").to_dict() | {"memory": None})
    bad_memory = _broken(memory=[1, 2]) | {"trial_id": "x__memory_list"}
    (store.trials_dir(run) / "x__memory_list.json").write_text(json.dumps(bad_memory))
    assert main(["report", str(run)]) == 0
    table = (run / "report" / "table.md").read_text()
    assert table.startswith("Warning: 2 trial files skipped (they break the result contract)")
    assert "field 'status'" in table and "field 'memory'" in table
    index = (run / "report" / "index.html").read_text()
    assert "2 trial files skipped" in index
    assert "2 trial files skipped" in capsys.readouterr().out


def test_compare_refuses_a_broken_file_with_exit_2(tmp_path: Path, capsys) -> None:
    ref = _run(tmp_path / "ref")
    run = _run(tmp_path, _broken(status=5))
    assert main(["compare", str(ref), str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "field 'status'" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("command", ["report", "compare", "show"])
def test_every_reader_refuses_a_newer_schema_with_exit_2(
    tmp_path: Path, capsys, command: str
) -> None:
    run = _run(tmp_path, _broken(schema=999))
    (run / "samples").mkdir()
    (run / "samples" / f"{_broken()['trial_id']}.jsonl").write_text("")
    argv = {
        "report": ["report", str(run)],
        "compare": ["compare", str(_run(tmp_path / "ref")), str(run)],
        "show": ["show", str(run), _broken()["trial_id"]],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "schema 999 is newer" in err and len(err.splitlines()) == 1


def test_show_refuses_a_trial_whose_file_breaks_the_contract(tmp_path: Path, capsys) -> None:
    run = _run(tmp_path, _broken(memory=[1]))
    (run / "samples").mkdir()
    (run / "samples" / f"{_broken()['trial_id']}.jsonl").write_text("")
    assert main(["show", str(run), _broken()["trial_id"]]) == 2
    assert "field 'memory'" in capsys.readouterr().err
