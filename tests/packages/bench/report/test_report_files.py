"""report/trials.csv, report/index.html and the joint table of several runs (--join)."""

from __future__ import annotations

import csv
import json
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from helpers.records import make_record, write_run

from bench import report
from bench.cli import main
from bench.report import index, join, trials_csv

BREAKDOWN = {
    "kind": "weights_plus_added",
    "breakdown": {
        "estimate": True,
        "weights_bytes": 100,
        "gradients_bytes": 100,
        "optimizer_state_bytes": 200,
        "activations_and_other_bytes": 50,
    },
}


def _run(tmp_path: Path, name: str = "run", fo_score: float = 0.4, lr: float = 1e-3) -> Path:
    records = []
    for seed in (0, 1):
        records += [
            make_record("none", seed=seed, score=0.1, train_seconds=0.0, peak_memory_bytes=0),
            make_record(
                "fo-adamw",
                seed=seed,
                score=fo_score + 0.02 * seed,
                memory=BREAKDOWN,
                config={"method": "fo-adamw", "seed": seed, "method_config": {"lr": lr}},
            ),
            make_record(
                "mezo",
                seed=seed,
                score=0.3,
                eval_curve=[{"step": 0, "seconds": 0.0, "dev_loss": 2.0}],
            ),
        ]
    records.append(make_record("mezo", seed=2, status="failed"))
    tune = make_record("mezo", seed=7, digest="tune0001")
    tune.config = {**tune.config, "phase": "tune", "method_config": {"lr": 1e-5}}
    records.append(tune)
    return write_run(tmp_path / name, records)


def _side_files(run: Path) -> None:
    """A log, samples and metrics for every trial but the failed one (it has a log only)."""
    for f in sorted((run / "trials").glob("*.json")):
        trial_id = f.stem
        (run / "logs").mkdir(exist_ok=True)
        (run / "logs" / f"{trial_id}.log").write_text("log\n")
        if "failed" in f.read_text() and '"status": "failed"' in f.read_text():
            continue
        for folder in ("samples", "metrics"):
            (run / folder).mkdir(exist_ok=True)
            (run / folder / f"{trial_id}.jsonl").write_text("{}\n")


# ---- trials.csv -------------------------------------------------------------------------


def test_trials_csv_one_flat_row_per_trial(tmp_path):
    run = _run(tmp_path)
    path = trials_csv.write_trials_csv(run, tmp_path / "out")
    rows = list(csv.DictReader(path.open()))
    files = sorted(p.stem for p in (run / "trials").glob("*.json"))
    assert sorted(r["trial_id"] for r in rows) == files  # every trial, tuning included
    header = list(rows[0])
    assert header[: len(trials_csv.LEADING)] == list(trials_csv.LEADING)
    assert not any(key in header for key in ("curve", "eval_curve", "config", "memory"))

    by_id = {r["trial_id"]: r for r in rows}
    fo = by_id["fo-adamw__math-mini__tiny__s1__abcd1234"]
    assert float(fo["score"]) == pytest.approx(0.42)
    assert fo["config.method_config.lr"] == "0.001" and fo["phase"] == "final"
    assert fo["memory.breakdown.optimizer_state_bytes"] == "200"
    assert float(fo["metrics.exact_match,strict-match"]) == pytest.approx(0.42)
    assert float(fo["final_loss"]) == pytest.approx(3.0 - 0.05 * 20)  # the curve's last
    mezo = by_id["mezo__math-mini__tiny__s0__abcd1234"]
    assert mezo["final_dev_loss"] == "2.0" and mezo["config.method_config.lr"] == ""
    assert by_id["mezo__math-mini__tiny__s7__tune0001"]["phase"] == "tune"
    failed = by_id["mezo__math-mini__tiny__s2__abcd1234"]
    assert failed["status"] == "failed" and failed["score"] == ""
    assert {r["run"] for r in rows} == {"run"}


def test_trial_row_keeps_config_lists_as_json_and_drops_other_lists():
    record = make_record(
        "hizfo",
        config={"method": "hizfo", "method_config": {"betas": [0.9, 0.99]}},
        method_summary={"profiles": [{"step": 0}], "fo_tensors": 3},
    )
    row = trials_csv.trial_row(record)
    assert json.loads(row["config.method_config.betas"]) == [0.9, 0.99]
    assert row["method_summary.fo_tensors"] == 3 and "method_summary.profiles" not in row


# ---- index.html ------------------------------------------------------------------------


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value and not value.startswith("#"):
                self.links.append(value)


def _links(page: Path) -> list[str]:
    parser = _Links()
    parser.feed(page.read_text())
    return parser.links


@pytest.mark.parametrize("elsewhere", [False, True])
def test_index_links_every_report_file_and_each_one_resolves(tmp_path, elsewhere):
    run = _run(tmp_path)
    _side_files(run)
    (run / "targets.json").write_text("{}")
    out = tmp_path / "elsewhere" / "report" if elsewhere else run / "report"
    written = report.write_report(run, out if elsewhere else None)
    page = out / "index.html"
    assert written[-1] == page
    links = _links(page)
    targets = [(out / unquote(link)).resolve() for link in links]
    missing = [link for link, t in zip(links, targets, strict=True) if not t.is_file()]
    assert not missing, missing

    linked = {
        t.relative_to(run.resolve()).as_posix() for t in targets if run.resolve() in t.parents
    }
    if elsewhere:
        linked |= {
            "report/" + t.relative_to(out.resolve()).as_posix()
            for t in targets
            if out.resolve() in t.parents
        }
    for name in ("table.md", "table.tex", "table.csv", "trials.csv", "time_to_target.md"):
        if (out / name).exists():
            assert f"report/{name}" in linked
    plots = {f"report/plots/{p.name}" for p in (out / "plots").iterdir()}
    assert plots <= linked  # every PNG shown, every PDF linked
    for f in (run / "trials").glob("*.json"):
        trial_id = f.stem
        assert f"trials/{trial_id}.json" in linked and f"logs/{trial_id}.log" in linked
    assert "targets.json" in linked
    failed = "mezo__math-mini__tiny__s2__abcd1234"
    assert f"samples/{failed}.jsonl" not in linked  # no file, no link
    assert "samples/mezo__math-mini__tiny__s0__abcd1234.jsonl" in linked


def test_index_renders_markdown_tables_or_falls_back_to_text(tmp_path, monkeypatch):
    run = _run(tmp_path)
    report.write_report(run)
    page = (run / "report" / "index.html").read_text()
    if index.render_markdown("| a |\n|---|\n| 1 |").startswith("<table"):
        assert "<table>" in page and "<th>method" in page
    monkeypatch.setitem(sys.modules, "markdown_it", None)  # not installed
    text = index.render_markdown("| a | <b> |\n|---|---|\n| 1 | 2 |")
    assert text.startswith("<pre>") and "&lt;b&gt;" in text


# ---- --join ----------------------------------------------------------------------------


def test_join_table_rows_by_method_and_run(tmp_path, capsys):
    ref = _run(tmp_path / "a", name="reference", fo_score=0.4)
    new = _run(tmp_path / "b", name="new-method", fo_score=0.6, lr=2e-3)
    out = tmp_path / "joined"
    assert main(["report", str(new), str(ref), "--join", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    text = (out / "join.md").read_text()
    assert text in printed
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ")][1:]
    keys = [(r[0].lstrip("| "), r[1]) for r in rows]
    assert keys == [
        ("none", "new-method"),
        ("none", "reference"),
        ("fo-adamw", "new-method"),
        ("fo-adamw", "reference"),
        ("mezo", "new-method"),
        ("mezo", "reference"),
    ]
    cells = dict(zip(keys, (r[2] for r in rows), strict=True))
    assert cells[("fo-adamw", "new-method")].startswith("61.0 ± ")
    assert cells[("fo-adamw", "reference")].startswith("41.0 ± ")
    assert "(1/3 failed)" in cells[("mezo", "reference")]
    assert "method_config.lr" in text  # fo-adamw ran with other settings in the two runs

    table = list(csv.DictReader((out / "join.csv").open()))
    fo = {r["run"]: r for r in table if r["method"] == "fo-adamw"}
    assert float(fo["new-method"]["score_mean"]) == pytest.approx(0.61)
    assert float(fo["reference"]["score_lo"]) < 0.41 < float(fo["reference"]["score_hi"])
    assert {r["seeds_failed"] for r in table if r["method"] == "mezo"} == {"1"}


def test_join_labels_tell_runs_of_one_name_apart(tmp_path):
    labels = join.run_labels([tmp_path / "x" / "run", tmp_path / "y" / "run", tmp_path / "z"])
    assert labels == ["x/run", "y/run", "z"]


def test_join_needs_two_runs(tmp_path, capsys):
    run = _run(tmp_path)
    assert main(["report", str(run), "--join"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--join needs two or more run directories" in err[0]
    assert not (run / "report").exists() and not (tmp_path / "report").exists()
