"""The time-to-target table of a run (Markdown); tuning.md is bench/report/tuning.py.

Time-to-target (bench/analysis/targets.py): per (model, task, method), how many seeds
reached the dev target within the budget, the mean seconds (train clock + setup) and
steps to it with 95% t-intervals, and the speed-up against the reference method
(reference time / method time per seed, geometric mean, a trial that did not reach the target at the budget).
"not reached" is never turned into a time.
"""

from __future__ import annotations

from pathlib import Path

from bench.analysis.stats import Interval
from bench.analysis.targets import speedups
from bench.format import method_order
from bench.record import TrialRecord


def fmt_interval(iv: Interval | None, unit: str = "", digits: int = 1) -> str:
    """ "12.3 s [10.1, 14.5]" (95% t-interval), "12.3 s" for a single value, "-" for none."""
    if iv is None:
        return "-"
    text = f"{iv.mean:.{digits}f}{unit}"
    if iv.lo is not None and iv.hi is not None:
        text += f" [{iv.lo:.{digits}f}, {iv.hi:.{digits}f}]"
    return text


def time_to_target_table(records: list[TrialRecord], reference: str) -> str | None:
    """The Markdown time-to-target table, or None when no trial has a target."""
    rows = speedups(records, reference)
    if not rows:
        return None
    order = {m: i for i, m in enumerate(method_order({r.method for r in rows}))}
    rows.sort(key=lambda r: (r.model, r.task, order[r.method]))
    lines = [
        "Time to the dev target on the train clock plus the method's setup (evaluation "
        "excluded), within the budget (the same for every method); mean and 95% t-interval "
        "over the seeds that reached it. Speed-up = "
        f"{reference} time / method time per seed: geometric mean and 95% t-interval over "
        "the seeds' log ratios (n seeds as stated); a trial that did not reach the target "
        "enters at the budget, also when it stopped earlier (≤ when the method did not "
        "reach it: the ratio is at most that), and seeds where neither reached it are left "
        "out.",
        "",
        "| model | task | target | budget | method | reached | seconds to target | steps | "
        f"speed-up vs {reference} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        reached = f"{r.reached}/{r.trials}"
        seconds = fmt_interval(r.seconds, " s") if r.reached else "not reached"
        steps = fmt_interval(r.steps, digits=0) if r.reached else "-"
        budget = "-" if r.budget is None else f"{r.budget:.0f} s"
        if r.method == reference:
            speed = "1 (reference)" if r.reached else "-"
        elif r.speedup is None:
            speed = "not reached" if not r.reached else "-"
        else:
            bound = "≤ " if r.pairs is not None and r.pairs.method_censored else ""
            n = f" (n = {r.speedup.n})"
            speed = bound + fmt_interval(r.speedup, "×", digits=2) + n
        model = Path(r.model).name or r.model
        lines.append(
            f"| {model} | {r.task} | {r.target} | {budget} | {r.method} | {reached} | "
            f"{seconds} | {steps} | {speed} |"
        )
    return "\n".join(lines) + "\n"
