"""Reports from trial files: tables (Markdown, LaTeX, CSV), plots and history.

format.py formats numbers and names; tables.py builds the paper's main table;
plots.py draws; history.py follows metrics over several runs. ``write_report`` writes
one run's report folder.
"""

from __future__ import annotations

from pathlib import Path

from bench import store
from bench.analysis.claims import Outcomes, doc_outcomes, score_difference
from bench.analysis.stats import split_settings
from bench.format import fmt_memory, fmt_relative, fmt_seconds, method_order, tex_escape
from bench.record import TrialRecord
from bench.report.claims import claims_from, claims_plot, render_claims
from bench.report.history import find_runs, write_history
from bench.report.index import environment_lines, skipped_lines, write_index
from bench.report.plots import laid_out, run_plots
from bench.report.tables import (
    BASELINE,
    FAMILY_ORDER,
    Cell,
    MainTable,
    Row,
    main_tables,
    mark_significance,
    reference_of,
    render_csv,
    render_latex,
    render_markdown,
    summary_table,
    task_family,
)
from bench.report.targets import time_to_target_table
from bench.report.trials_csv import write_trials_csv
from bench.report.tuning import tuning_table

FRAME_COLUMNS = store.FRAME_COLUMNS
trial_frame = store.records_frame

__all__ = [
    "BASELINE",
    "FAMILY_ORDER",
    "FRAME_COLUMNS",
    "Cell",
    "MainTable",
    "Row",
    "find_runs",
    "fmt_memory",
    "fmt_relative",
    "fmt_seconds",
    "main_tables",
    "method_order",
    "render_csv",
    "render_latex",
    "render_markdown",
    "skipped_lines",
    "summary_table",
    "task_family",
    "tex_escape",
    "trial_frame",
    "write_history",
    "write_report",
]


def write_report(run_dir: Path, out_dir: Path | None = None, plots: bool = True) -> list[Path]:
    """Tables and plots of one run into RUN_DIR/report/; returns the files written
    (`plots` False: the text files only).

    Tuning trials (phase "tune") only appear in tuning.md; every other table and plot
    shows the final trials.
    """
    run_dir = Path(run_dir)
    files = store.read_run(run_dir)
    records = files.records
    if not records:
        raise ValueError(f"{run_dir} holds no trial files that keep the contract")
    records = [r for r in records if r.config.get("phase", "final") == "final"]
    records, setting_warnings = split_settings(records)  # never average two settings
    setting_warnings = [
        *skipped_lines(files.skipped)[:1],
        *environment_lines(records),
        *setting_warnings,
    ]
    out_dir = Path(out_dir) if out_dir else run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = store.records_frame(records, run=run_dir.name)
    tables = main_tables(frame, records)
    outcomes = doc_outcomes(run_dir)
    baseline = reference_of({r.method for r in records})  # the declared reference
    mark_significance(tables, _score_comparisons(records, outcomes, baseline))
    reference = next(  # the time-to-target reference the run recorded, else the declared
        (
            r.time_to_target["reference"]
            for r in records
            if r.time_to_target and r.time_to_target.get("reference")
        ),
        baseline,
    )
    texts = [
        ("table.md", render_markdown(tables, setting_warnings)),
        ("table.tex", render_latex(tables)),
        ("table.csv", render_csv(tables)),
        ("time_to_target.md", time_to_target_table(records, reference)),
        ("tuning.md", tuning_table(run_dir)),
    ]
    claims = claims_from(records, outcomes, reference=baseline)  # records read once above
    if claims is not None:
        texts.append(("claims.md", render_claims(claims, records, setting_warnings)))
    written = []
    for name, text in texts:
        if text is None:
            continue
        path = out_dir / name
        path.write_text(text)
        written.append(path)
    if plots:
        written += run_plots(records, frame, out_dir / "plots")
        if claims:  # two panels with long tick labels: laid out so none overlaps
            with laid_out():
                written += claims_plot(claims, out_dir / "plots")
    written.append(write_trials_csv(run_dir, out_dir))
    written.append(write_index(run_dir, out_dir))  # last: it links what is on disk
    return written


def _score_comparisons(records: list[TrialRecord], outcomes: Outcomes, reference: str) -> dict:
    """(method, task, model) -> paired-bootstrap Comparison against `reference`."""
    cells = {(r.method, r.task, r.model) for r in records if r.method != reference}
    return {
        (m, t, mo): score_difference(records, outcomes, m, reference, t, mo) for m, t, mo in cells
    }
