"""docs/results.md's field table of the trial file against TrialRecord: a field added to
one and not the other fails here."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from bench.record import FRAME_COLUMNS, NOT_WRITTEN, REQUIRED_FIELDS, TrialRecord

RESULTS_MD = Path(__file__).resolve().parents[3] / "docs" / "results.md"


def documented_fields(text: str) -> dict[str, bool]:
    """Field -> marked *optional*, from the first table of the "## The trial file" section."""
    section = text.split("## The trial file", 1)[1].split("\n## ", 1)[0]
    out: dict[str, bool] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            if out:  # the end of the first table
                break
            continue
        names, meaning = line.split("|")[1:3]
        for name in re.findall(r"`([a-z_]+)`", names):
            out[name] = meaning.strip().startswith("*optional*")
    return out


def record_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(TrialRecord)} - set(NOT_WRITTEN)


def test_the_field_table_names_every_field_of_the_record_and_no_other():
    documented = documented_fields(RESULTS_MD.read_text())
    assert set(documented) == record_fields()


def test_every_field_left_out_while_null_is_marked_optional():
    documented = documented_fields(RESULTS_MD.read_text())
    assert {f for f, optional in documented.items() if optional} >= set(TrialRecord._OMIT_WHEN_NONE)
    assert not {f for f, optional in documented.items() if optional} & set(REQUIRED_FIELDS)


def test_the_field_lists_derive_from_the_dataclass():
    names = [f.name for f in dataclasses.fields(TrialRecord)]
    assert list(REQUIRED_FIELDS) == [n for n in names if n in REQUIRED_FIELDS]
    assert set(REQUIRED_FIELDS) <= set(names) and "placement" in names
    own = [c for c in FRAME_COLUMNS if c in names]
    assert own == [n for n in names if n in own]  # the dataclass's order
