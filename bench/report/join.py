"""One table over several runs: ``hizfo-bench report RUN_A RUN_B --join``.

A new method's run beside the reference run, or tonight's run beside last week's: rows
are keyed by method and run (the rows of one method sit together, one per run), columns
are the tasks, each cell the test score x100 as in the main table (mean over the seeds
that finished ± the half-width of its 95% t-interval, the seed count in brackets,
failures counted); beside them the mean train time per trial and the largest per-task
mean peak memory. Only final trials count. Trials of one method that ran with other
settings within a run are split as in the main table (stats.split_settings); settings
that differ *between* the runs for a method are listed under the table, since such rows
compare two configurations, not two runs of one.

Writes ``join.md`` and ``join.csv`` (one row per method, run, task and model, raw
numbers: scores 0..1, seconds, bytes).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import store
from bench.analysis.stats import mean_interval, split_settings
from bench.format import flatten, fmt_memory, fmt_seconds, method_order
from bench.record import TrialRecord

_NOT_A_SETTING = {"seed", "phase", "method", "task", "model", "tuning_point"}


def run_labels(run_dirs: list[Path]) -> list[str]:
    """Short unique names for the runs: each folder's name, with as many parent folders
    as it takes to tell it apart from the other runs."""
    parts = [Path(p).resolve().parts for p in run_dirs]
    labels = []
    for i, mine in enumerate(parts):
        others = [p for j, p in enumerate(parts) if j != i]
        depth = 1
        while depth < len(mine) and any(p[-depth:] == mine[-depth:] for p in others):
            depth += 1
        labels.append("/".join(mine[-depth:]))
    return labels


@dataclass
class JoinCell:
    """One method's trials of one run on one task and model."""

    method: str
    run: str
    task: str
    model: str
    scores: list[float]
    failed: int
    train_seconds: list[float]
    peak_memory: list[float]

    def score_text(self) -> str:
        interval = mean_interval(self.scores)
        if interval is None:
            return "failed" if self.failed else "-"
        text = f"{100 * interval.mean:.1f}"
        if interval.half_width is not None:
            text += f" ± {100 * interval.half_width:.1f}"
        text += f" ({interval.n})"
        if self.failed:
            text += f" ({self.failed}/{interval.n + self.failed} failed)"
        return text


def _final(records: list[TrialRecord]) -> list[TrialRecord]:
    return [r for r in records if r.config.get("phase", "final") == "final"]


def join_cells(runs: dict[str, list[TrialRecord]]) -> list[JoinCell]:
    """The cells of the joint table, from each run's records (label -> records)."""
    cells: dict[tuple[str, str, str, str], JoinCell] = {}
    for run, records in runs.items():
        records, _ = split_settings(_final(records))
        for r in records:
            key = (r.method, run, r.task, r.model)
            cell = cells.setdefault(key, JoinCell(*key, [], 0, [], []))
            if not r.ok:
                cell.failed += 1
                continue
            if isinstance(r.score, int | float):
                cell.scores.append(float(r.score))
            if isinstance(r.train_seconds, int | float):
                cell.train_seconds.append(float(r.train_seconds))
            if isinstance(r.peak_memory_bytes, int | float):
                cell.peak_memory.append(float(r.peak_memory_bytes))
    return list(cells.values())


def setting_differences(runs: dict[str, list[TrialRecord]]) -> list[str]:
    """Per method present in several runs: the settings whose values differ between
    the runs (one line each)."""
    values: dict[str, dict[str, dict[str, set[str]]]] = {}  # method -> key -> run -> values
    for run, records in runs.items():
        for r in _final(records):
            for key, value in flatten(r.config, skip=_NOT_A_SETTING).items():
                text = json.dumps(value, sort_keys=True, default=str)
                values.setdefault(r.method, {}).setdefault(key, {}).setdefault(run, set()).add(text)
    lines = []
    for method in method_order(set(values)):
        keys = values[method]
        in_runs = {run for per_run in keys.values() for run in per_run}
        if len(in_runs) < 2:
            continue
        differing = []
        for key in sorted(keys):
            per_run = keys[key]
            seen = {frozenset(v) for v in per_run.values()}
            if len(per_run) != len(in_runs) or len(seen) > 1:
                shown = "; ".join(
                    f"{run}: {', '.join(sorted(per_run.get(run, {'(unset)'})))}"
                    for run in runs
                    if run in in_runs
                )
                differing.append(f"`{key}` ({shown})")
        if differing:
            lines.append(f"{method}: " + ", ".join(differing))
    return lines


def render_join(runs: dict[str, list[TrialRecord]]) -> tuple[str, str]:
    """The joint table as Markdown, and its raw numbers as CSV."""
    cells = join_cells(runs)
    labels = list(runs)
    columns = sorted({(c.task, c.model) for c in cells})
    models = {m for _, m in columns}
    by_key = {(c.method, c.run, c.task, c.model): c for c in cells}
    order = method_order({c.method for c in cells})
    rows = sorted(
        {(c.method, c.run) for c in cells},
        key=lambda mr: (order.index(mr[0]), labels.index(mr[1])),
    )
    head = [t if len(models) == 1 else f"{t} ({Path(m).name or m})" for t, m in columns]
    lines = [
        f"# Joint table: {', '.join(labels)}",
        "",
        "Test score x100 per task: mean over the seeds that finished ± the half-width of "
        "its 95% t-interval, seeds in brackets (no interval with one seed). Train time: "
        "mean train clock per trial; peak memory: the largest per-task mean. Final "
        "trials only.",
        "",
        "| method | run | " + " | ".join(head) + " | train time | peak memory |",
        "|---|---|" + "---|" * len(head) + "---|---|",
    ]
    for method, run in rows:
        here = [by_key.get((method, run, t, m)) for t, m in columns]
        texts = [c.score_text() if c else "" for c in here]
        times = [s for c in here if c for s in c.train_seconds]
        memory = [sum(c.peak_memory) / len(c.peak_memory) for c in here if c and c.peak_memory]
        time_text = fmt_seconds(sum(times) / len(times)) if times else "-"
        memory_text = fmt_memory(max(memory)) if memory else "-"
        lines.append(
            f"| {method} | {run} | " + " | ".join(texts) + f" | {time_text} | {memory_text} |"
        )
    differences = setting_differences(runs)
    if differences:
        lines += [
            "",
            "Settings that differ between the runs (these rows compare configurations):",
            "",
        ]
        lines += [f"- {line}" for line in differences]
    missing = [
        f"{method} ({', '.join(run for run in labels if (method, run) not in set(rows))})"
        for method in order
        if any((method, run) not in set(rows) for run in labels)
    ]
    if missing:
        lines += ["", "Not run in: " + "; ".join(missing)]
    return "\n".join(lines) + "\n", _join_csv(rows, columns, by_key)


def _join_csv(
    rows: list[tuple[str, str]],
    columns: list[tuple[str, str]],
    by_key: dict[tuple[str, str, str, str], JoinCell],
) -> str:
    """The joint table's raw numbers: one CSV row per (method, run, task, model) cell."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "method",
            "run",
            "task",
            "model",
            "seeds_ok",
            "seeds_failed",
            "score_mean",
            "score_lo",
            "score_hi",
            "train_seconds_mean",
            "peak_memory_bytes_mean",
        ]
    )
    for method, run in rows:
        for task, model in columns:
            cell = by_key.get((method, run, task, model))
            if cell is None:
                continue
            interval = mean_interval(cell.scores)
            writer.writerow(
                [
                    method,
                    run,
                    task,
                    model,
                    len(cell.scores),
                    cell.failed,
                    *(
                        ("", "", "")
                        if interval is None
                        else (interval.mean, _blank(interval.lo), _blank(interval.hi))
                    ),
                    _mean(cell.train_seconds),
                    _mean(cell.peak_memory),
                ]
            )
    return out.getvalue()


def _blank(x: float | None) -> Any:
    return "" if x is None else x


def _mean(xs: list[float]) -> Any:
    return sum(xs) / len(xs) if xs else ""


def write_join(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """``join.md`` and ``join.csv`` over `run_dirs` into `out_dir`; returns the files."""
    labels = run_labels([Path(p) for p in run_dirs])
    runs = {label: store.read_trials(Path(p)) for label, p in zip(labels, run_dirs, strict=True)}
    markdown, table = render_join(runs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "join.md", out_dir / "join.csv"]
    written[0].write_text(markdown)
    written[1].write_text(table)
    return written
