"""What the report knows about methods comes from their traits (bench.method.MethodTraits),
never their names: renamed copies of Hi-ZFO and fo-adamw, registered as plugins, get the
same claims.md and tables as the originals, with their own names."""

from __future__ import annotations

import json
import random

import pytest
from helpers.plugins import install_plugin
from helpers.records import make_record, write_run

from bench.analysis.regress.checks import guarded_ratios
from bench.registry import refresh_methods, traits_of
from bench.report import write_report

RENAMED = """
from baselines.fo_adamw import FOAdamW
from baselines.hizfo import HiZFOMethod


class Hybrid(HiZFOMethod):
    pass


class Reference(FOAdamW):
    pass
"""
NAMES = {"hizfo": "my-hybrid", "fo-adamw": "my-reference"}


@pytest.fixture
def renamed(tmp_path, monkeypatch):
    """my-hybrid (Hi-ZFO's class) and my-reference (fo-adamw's), registered as plugins."""
    folder = tmp_path / "plugins"
    install_plugin(folder, "renamed_methods", "my-hybrid", "Hybrid", RENAMED)
    with (folder / "renamed_methods-0.1.dist-info" / "entry_points.txt").open("a") as f:
        f.write("my-reference = renamed_methods:Reference\n")
    monkeypatch.syspath_prepend(str(folder))
    refresh_methods()
    yield NAMES
    monkeypatch.undo()
    refresh_methods()


def _run(folder, names):
    """Three seeds of the hybrid, its zo-off twin and the reference on one task, with
    per-document samples, under the labels `names` gives the built-in methods."""
    records = []
    for method, p, seconds in (("hizfo", 0.6, 60.0), ("hizfo[zo-off]", 0.55, 65.0)) + (
        ("fo-adamw", 0.4, 100.0),
    ):
        base, _, variant = method.partition("[")
        label = names.get(base, base) + (f"[{variant}" if variant else "")
        for seed in range(3):
            r = make_record(
                label, seed=seed, score=p, train_seconds=seconds + seed, digest=f"d{seed}"
            )
            r.eval_samples = 50
            records.append(r)
    write_run(folder, records)
    (folder / "samples").mkdir()
    for r in records:
        rng = random.Random(f"{r.seed}/{r.score}")
        lines = [{"doc_id": d, "score": float(rng.random() < r.score)} for d in range(50)]
        (folder / "samples" / f"{r.trial_id}.jsonl").write_text(
            "".join(json.dumps(x) + "\n" for x in lines)
        )
    return folder


def _rename(text, names):
    """`text` with the built-in names back, and claims.md's seed table (rows sorted by
    label, so by name) sorted again."""
    for old, new in names.items():
        text = text.replace(new, old)
    lines = text.split("\n")
    if "| method | task | model | seeds finished | failed |" in lines:
        start = lines.index("| method | task | model | seeds finished | failed |") + 2
        end = lines.index("", start)
        lines[start:end] = sorted(lines[start:end])
    return "\n".join(lines)


def test_renamed_hybrid_and_reference_get_the_same_claims_and_tables(tmp_path, renamed):
    assert traits_of("my-hybrid").is_hybrid and traits_of("my-reference").is_reference
    original = _run(tmp_path / "original", {})
    copy = _run(tmp_path / "renamed", renamed)
    write_report(original, plots=False)
    write_report(copy, plots=False)
    for name in ("claims.md", "table.md", "table.csv", "table.tex"):
        want = (original / "report" / name).read_text()
        got = (copy / "report" / name).read_text()
        assert "my-hybrid" in got or name != "claims.md"
        assert "my-reference" in got
        assert _rename(got, renamed) == want, name


def test_guarded_perf_ratios_are_the_methods_declared_ones(renamed):
    assert guarded_ratios("mezo") == [
        ("mezo_step_over_two_forwards", "time"),
        ("mezo_peak_over_inference_peak", "memory"),
        ("mezo_ops_over_floor_ops", "ops"),
    ]
    hizfo = [("hizfo_step_over_fo_step", "time"), ("hizfo_ops_over_floor_ops", "ops")]
    assert guarded_ratios("hizfo") == hizfo
    assert guarded_ratios("my-hybrid") == [(k.replace("hizfo", "my-hybrid"), v) for k, v in hizfo]
    assert guarded_ratios("mezo[keep_z]") == [] and guarded_ratios("fo-adamw") == []
