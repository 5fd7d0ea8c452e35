"""Reports from trial files: the paper's main table (Markdown, LaTeX, CSV) and the plots.

The main table has one block per model: rows are methods, columns are tasks grouped by
family, each cell the score's mean ± the half-width of its 95% t-interval over the seeds
that finished (best per column in bold; the caption says how many seeds); beside them the
mean train time per trial, the time relative to fo-adamw and the peak memory. Failed
trials are counted in the cell they belong to and listed under the table. Only final
trials appear (tuning and target-setting trials are left out); trials of one method that
ran with different settings arrive here as different rows (stats.split_settings).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.analysis.stats import mean_interval
from bench.format import (
    MEMORY_NOTE,
    fmt_memory,
    fmt_mib,
    fmt_relative,
    fmt_seconds,
    method_order,
    tex_escape,
)
from bench.record import TrialRecord

# The "time relative to" column divides by the time of the method that declares itself
# the reference (MethodTraits.is_reference: fo-adamw); this name is the fallback when no
# method of the run is installed here to say so.
BASELINE = "fo-adamw"


def reference_of(methods: Iterable[str]) -> str:
    """The run's reference method: the one that declares itself so, else BASELINE."""
    from bench.registry import reference_method

    return reference_method(methods) or BASELINE


NOT_SIGNIFICANT = "†"
FAMILY_ORDER = ("math", "code", "generative")


def summary_table(frame: pd.DataFrame) -> str:
    """Markdown table, one row per (method, task): score, train seconds, peak memory, and,
    when the run has targets, the train-clock seconds to the dev target.

    Failed trials appear as "failed" (never silently dropped); seeds are averaged, and
    "seeds" counts the ones that finished. Two trials of one seed in a row (the same
    method run with different settings) are flagged, not averaged silently.
    """
    if "phase" in frame:  # tuning and target-setting trials are not final results
        frame = frame[frame["phase"].fillna("final") == "final"]
    if frame.empty:
        return "(no trials)"
    with_target = "target_reached" in frame and frame["target_reached"].notna().any()
    extra = " to target |" if with_target else ""
    lines = [
        f"| method | task | model | seeds | score | train s | peak memory |{extra} status |",
        "|---|---|---|---|---|---|---|" + ("---|" if with_target else "") + "---|",
    ]
    order = {m: i for i, m in enumerate(method_order(set(frame["method"])))}
    groups = sorted(
        frame.groupby(["method", "task", "model"], sort=False),
        key=lambda kv: (order[kv[0][0]], kv[0][1], kv[0][2]),
    )
    for (method, task, model), g in groups:
        ok = g[g["status"] == "ok"]
        n_failed = len(g) - len(ok)
        status = "ok" if n_failed == 0 else f"{n_failed} failed"
        if g["seed"].duplicated().any():
            status += "; several settings per seed (see report)"
        if ok.empty:
            score = train = mem = "-"
        else:
            score = "-" if ok["score"].isna().all() else f"{ok['score'].mean():.3f}"
            if len(ok) > 1 and ok["score"].notna().all():
                score += f" ± {ok['score'].std():.3f}"
            train = f"{ok['train_seconds'].mean():.1f}"
            mem = fmt_mib(ok["peak_memory_bytes"].mean(), sep=",")
        cells = [method, task, model, str(len(ok)), score, train, mem]
        if with_target:
            cells.append(_to_target_cell(ok))
        lines.append("| " + " | ".join([*cells, status]) + " |")
    return "\n".join(lines)


def task_family(task: str, records: Sequence[TrialRecord] = ()) -> str:
    """The table's family column of `task`: a registered task's, or a suite-defined
    one's (a jsonl task's ``family``) from its records' ``config.task_config``."""
    from bench.tasks import task_labels

    configs = [r.config.get("task_config") for r in records if r.task == task]
    for config in [*(c for c in configs if c), None]:
        labels = task_labels(task, config)
        if labels is not None:
            return labels[0]
    return "other"


# ---- the main table ------------------------------------------------------------------


@dataclass
class Cell:
    mean: float | None = None
    std: float | None = None  # None with a single ok seed
    half: float | None = None  # half-width of the 95% t-interval over seeds; None with one
    n_ok: int = 0
    n_failed: int = 0
    best: bool = False
    # Against the reference method (paired bootstrap over test documents): True when the
    # difference's 95% interval excludes 0, False when it contains 0, None when not tested.
    significant: bool | None = None

    def text(self, pm: str = "±") -> str:
        if self.n_ok == 0:
            return "failed" if self.n_failed else "-"
        assert self.mean is not None  # set for every cell with a trial that scored
        out = f"{100 * self.mean:.1f}"
        if self.half is not None:
            out += f" {pm} {100 * self.half:.1f}"
        if self.significant is False:
            out += NOT_SIGNIFICANT
        if self.n_failed:
            out += f" ({self.n_failed}/{self.n_ok + self.n_failed} failed)"
        return out


@dataclass
class Row:
    method: str
    cells: dict[str, Cell]
    average: float | None  # mean score over tasks, only when every task has a score
    train_seconds: float | None  # mean over this method's ok trials
    relative_time: float | None  # vs the reference over the tasks both have; None = none
    peak_memory_bytes: float | None  # the largest per-task mean
    task_train_seconds: dict[str, float | None] = field(default_factory=dict)
    task_peak_memory: dict[str, float | None] = field(default_factory=dict)


@dataclass
class MainTable:
    model: str
    columns: list[tuple[str, str]]  # (family, task), grouped by family
    rows: list[Row]
    memory_kinds: list[str]
    failed: pd.DataFrame  # every failed trial of this model, with its error
    reference: str = BASELINE  # the method compared and timed against (reference_of)

    @property
    def has_average(self) -> bool:
        return len(self.columns) > 1


def _mean(values: pd.Series) -> float | None:
    values = values.dropna()
    return float(values.mean()) if len(values) else None


def main_tables(frame: pd.DataFrame, records: Sequence[TrialRecord] = ()) -> list[MainTable]:
    """One MainTable per model: the numbers behind table.md / .tex / .csv (`records`: the
    frame's, for the family of a suite-defined task)."""
    if "phase" in frame:  # tuning and target-setting trials are not final results
        frame = frame[frame["phase"].fillna("final") == "final"]
    reference = reference_of(set(frame["method"]))
    tables = []
    for model, mframe in frame.groupby("model", sort=True):
        tasks = sorted(set(mframe["task"]))
        families = {t: task_family(t, records) for t in tasks}
        fam_rank = {f: i for i, f in enumerate(FAMILY_ORDER)}
        columns = sorted(
            ((families[t], t) for t in tasks), key=lambda c: (fam_rank.get(c[0], 99), c)
        )
        ok = mframe[mframe["status"] == "ok"]
        per_task_time = ok.groupby(["method", "task"])["train_seconds"].mean()
        rows = []
        for method in method_order(set(mframe["method"])):
            g = mframe[mframe["method"] == method]
            cells, times, mems = {}, {}, {}
            for _, task in columns:
                t = g[g["task"] == task]
                scores = t.loc[t["status"] == "ok", "score"].dropna()
                cell = Cell(n_ok=len(scores), n_failed=int((t["status"] != "ok").sum()))
                if len(scores):
                    cell.mean = float(scores.mean())
                    cell.std = float(scores.std()) if len(scores) > 1 else None
                    iv = mean_interval(list(scores))
                    cell.half = iv.half_width if iv is not None else None
                cells[task] = cell
                t_ok = t[t["status"] == "ok"]
                times[task] = _mean(t_ok["train_seconds"])
                mems[task] = _mean(t_ok["peak_memory_bytes"])
            means = [c.mean for c in cells.values() if c.mean is not None]
            average = sum(means) / len(means) if cells and len(means) == len(cells) else None
            rel = None
            if reference in set(mframe["method"]):
                timed = {task: s for task, s in times.items() if s is not None}
                shared = [
                    task
                    for _, task in columns
                    if task in timed
                    and pd.notna(per_task_time.get((reference, task), float("nan")))
                ]
                base = sum(per_task_time[(reference, task)] for task in shared)
                if shared and base > 0:
                    rel = sum(timed[task] for task in shared) / base
            mem_values = [m for m in mems.values() if m is not None]
            rows.append(
                Row(
                    method=method,
                    cells=cells,
                    average=average,
                    train_seconds=_mean(g.loc[g["status"] == "ok", "train_seconds"]),
                    relative_time=rel,
                    peak_memory_bytes=max(mem_values) if mem_values else None,
                    task_train_seconds=times,
                    task_peak_memory=mems,
                )
            )
        for _, task in columns:
            scored = [m for r in rows if (m := r.cells[task].mean) is not None]
            best = max(scored, default=None)
            for r in rows:
                c = r.cells[task]
                c.best = best is not None and c.mean is not None and math.isclose(c.mean, best)
        kinds = sorted({k for k in mframe["memory_kind"].dropna()})
        failed = mframe[mframe["status"] != "ok"][["trial_id", "method", "task", "seed", "error"]]
        tables.append(MainTable(str(model), columns, rows, kinds, failed, reference))
    return tables


def _seed_counts(table: MainTable) -> str:
    counts = sorted({c.n_ok for r in table.rows for c in r.cells.values() if c.n_ok})
    if not counts:
        return "no finished seeds"
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"n = {n} finished seed{'s' if counts[-1] != 1 else ''} per cell"


def _caption(table: MainTable) -> str:
    kinds = "; ".join(MEMORY_NOTE.get(k, k) for k in table.memory_kinds) or "not measured"
    counts = _seed_counts(table)
    one = all(c.n_ok <= 1 for r in table.rows for c in r.cells.values())
    spread = (
        "one seed: no interval, and no test against "
        f"{table.reference} (one trained model per method cannot measure seed variance)"
        if one
        else f"mean ± half-width of the 95% t-interval over seeds ({counts}); "
        f"{NOT_SIGNIFICANT} = the difference from {table.reference}, paired by seed and document "
        "(t over seeds, seed and document variance), has a 95% interval containing 0"
    )
    return (
        f"{table.model}: score ×100, {spread} (best per task in bold). "
        f"Train time: mean per trial; relative to {table.reference} over the tasks both ran. "
        f"Memory: {kinds}."
    )


def render_markdown(tables: list[MainTable], warnings: list[str] | None = None) -> str:
    out = [f"Warning: {w}" for w in warnings or []]
    for table in tables:
        head = ["method"] + [f"{fam} / {task}" for fam, task in table.columns]
        if table.has_average:
            head.append("avg")
        head += ["train time", f"time vs {table.reference}", "peak memory"]
        lines = [
            f"### {table.model}",
            "",
            _caption(table),
            "",
            "| " + " | ".join(head) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
        ]
        for r in table.rows:
            cells = []
            for _, task in table.columns:
                c = r.cells[task]
                cells.append(f"**{c.text()}**" if c.best else c.text())
            if table.has_average:
                cells.append("-" if r.average is None else f"{100 * r.average:.1f}")
            cells += [
                fmt_seconds(r.train_seconds),
                fmt_relative(r.relative_time),
                fmt_memory(r.peak_memory_bytes),
            ]
            lines.append("| " + " | ".join([r.method, *cells]) + " |")
        if len(table.failed):
            lines += ["", f"Failed trials ({len(table.failed)}):", ""]
            for f in table.failed.itertuples():
                error = str(f.error or "no error recorded").splitlines()[0][:200]
                lines.append(f"- `{f.trial_id}`: {error}")
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def _tex_caption(table: MainTable) -> str:
    # ± and × are not safe in pdflatex text mode without extra packages: use math mode.
    text = tex_escape(_caption(table))
    return text.replace("±", "$\\pm$").replace("×", "$\\times$")


def render_latex(tables: list[MainTable]) -> str:
    """booktabs tables: family headers spanning their tasks, then the task names."""
    out = ["% needs \\usepackage{booktabs}"]
    for table in tables:
        n_task = len(table.columns)
        extra = (["Avg."] if table.has_average else []) + [
            "Time",
            f"vs {tex_escape(table.reference)}",
            "Memory",
        ]
        spec = "l" + "c" * n_task + "r" * len(extra)
        groups: list[tuple[str, int]] = []
        for fam, _ in table.columns:
            if groups and groups[-1][0] == fam:
                groups[-1] = (fam, groups[-1][1] + 1)
            else:
                groups.append((fam, 1))
        fam_cells, rules, col = [], [], 2
        for fam, n in groups:
            fam_cells.append(f"\\multicolumn{{{n}}}{{c}}{{{tex_escape(fam.capitalize())}}}")
            rules.append(f"\\cmidrule(lr){{{col}-{col + n - 1}}}")
            col += n
        lines = [
            "\\begin{table}[t]",
            "\\centering",
            f"\\caption{{{_tex_caption(table)}}}",
            f"\\begin{{tabular}}{{{spec}}}",
            "\\toprule",
            " & ".join(["", *fam_cells, *[""] * len(extra)]) + " \\\\",
            " ".join(rules),
            " & ".join(["Method", *[tex_escape(task) for _, task in table.columns], *extra])
            + " \\\\",
            "\\midrule",
        ]
        for r in table.rows:
            cells = []
            for _, task in table.columns:
                c = r.cells[task]
                text = tex_escape(c.text(pm="PLUSMINUS")).replace("PLUSMINUS", "$\\pm$")
                cells.append(f"\\textbf{{{text}}}" if c.best else text)
            if table.has_average:
                cells.append("-" if r.average is None else f"{100 * r.average:.1f}")
            cells += [
                tex_escape(fmt_seconds(r.train_seconds)),
                "-" if r.relative_time is None else f"{r.relative_time:.2f}$\\times$",
                tex_escape(fmt_memory(r.peak_memory_bytes)),
            ]
            lines.append(" & ".join([tex_escape(r.method), *cells]) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def render_csv(tables: list[MainTable]) -> str:
    """Machine-readable numbers: one row per (model, method), raw units, no formatting."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    all_cols = sorted({c for t in tables for c in t.columns})
    header = ["model", "method"]
    for fam, task in all_cols:
        header += [
            f"{fam}/{task} score_mean",
            f"{fam}/{task} score_std",
            f"{fam}/{task} n_ok",
            f"{fam}/{task} n_failed",
            f"{fam}/{task} train_seconds",
            f"{fam}/{task} peak_memory_bytes",
        ]
    header += [
        "score_average",
        "train_seconds_mean",
        f"time_relative_to_{tables[0].reference if tables else BASELINE}",
        "peak_memory_bytes",
        "best_in",
    ]
    writer.writerow(header)

    def num(x: float | None) -> str:
        return "" if x is None else repr(float(x))

    for t in tables:
        for r in t.rows:
            row = [t.model, r.method]
            for col in all_cols:
                c = r.cells.get(col[1])
                if col not in t.columns or c is None:
                    row += [""] * 6
                    continue
                row += [
                    num(c.mean),
                    num(c.std),
                    str(c.n_ok),
                    str(c.n_failed),
                    num(r.task_train_seconds.get(col[1])),
                    num(r.task_peak_memory.get(col[1])),
                ]
            best = ";".join(task for task, c in r.cells.items() if c.best)
            row += [
                num(r.average),
                num(r.train_seconds),
                num(r.relative_time),
                num(r.peak_memory_bytes),
                best,
            ]
            writer.writerow(row)
    return buf.getvalue()


def _to_target_cell(ok: pd.DataFrame) -> str:
    """Mean train-clock seconds to the target over the seeds that reached it, "n/N" when
    some did not, "not reached" when none did, "-" without a target."""
    known = ok[ok["target_reached"].notna()]
    if known.empty:
        return "-"
    hit = known[known["target_reached"].astype(bool)]
    if hit.empty:
        return "not reached"
    text = f"{hit['target_seconds'].mean():.1f} s"
    return text if len(hit) == len(known) else f"{text} ({len(hit)}/{len(known)})"


def mark_significance(
    tables: list[MainTable], comparisons: dict[tuple[str, str, str], Any]
) -> None:
    """Set each cell's ``significant`` from (method, task, model) -> Comparison (from
    bench/analysis/claims.score_difference); cells with one paired seed stay untested."""
    for table in tables:
        for row in table.rows:
            for task, cell in row.cells.items():
                c = comparisons.get((row.method, task, table.model))
                if (
                    c is not None
                    and c.interval is not None
                    and c.interval.lo is not None
                    and getattr(c, "seeds", 2) >= 2  # one seed: no test (see _caption)
                ):
                    cell.significant = c.direction != 0
