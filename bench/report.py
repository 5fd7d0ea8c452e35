"""Tables from a run's trial files."""

from __future__ import annotations

import pandas as pd


def _fmt_bytes(n: float | None) -> str:
    if n is None or pd.isna(n):
        return "-"
    return f"{n / 2**20:,.0f} MiB"


def summary_table(frame: pd.DataFrame) -> str:
    """Markdown table, one row per (method, task): score, train seconds, peak memory.

    Failed trials appear as "failed" (never silently dropped); seeds are averaged.
    """
    if frame.empty:
        return "(no trials)"
    lines = [
        "| method | task | model | seeds | score | train s | peak memory | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (method, task, model), g in frame.groupby(["method", "task", "model"], sort=False):
        ok = g[g["status"] == "ok"]
        n_failed = len(g) - len(ok)
        status = "ok" if n_failed == 0 else f"{n_failed} failed"
        if ok.empty:
            score = train = mem = "-"
        else:
            score = f"{ok['score'].mean():.3f}"
            if len(ok) > 1:
                score += f" ± {ok['score'].std():.3f}"
            train = f"{ok['train_seconds'].mean():.1f}"
            mem = _fmt_bytes(ok["peak_memory_bytes"].mean())
        lines.append(
            f"| {method} | {task} | {model} | {len(g)} | {score} | {train} | {mem} | {status} |"
        )
    return "\n".join(lines)
