"""The compare verdict written down: the console table and the JSON file."""

from __future__ import annotations

import json
from pathlib import Path

from bench.analysis.regress.checks import TrialComparison, _num
from bench.analysis.regress.verdict import Verdict


def render_table(verdict: Verdict) -> str:
    """A fixed-width table, one line per trial, regressions first, then one line per
    flagged figure saying what changed, by how much, and the evidence."""

    def score(t: TrialComparison) -> str:
        c = t.check("score") or t.check("mean score")
        if c is None or c.reference is None or _num(c.current) is None:
            return "-"
        return f"{c.reference:.3f}->{c.current:.3f}"

    def step_time(t: TrialComparison) -> str:
        c = t.check("step time")
        if c is None:
            return "-"
        if c.reference is None:
            return c.status
        return f"x{c.details['ratio']:.2f} {c.status}"

    def loss(t: TrialComparison) -> str:
        c = t.check("final training loss")
        if c is None or c.reference is None or c.current is None:
            return "-"
        return f"{c.reference:.4f}->{c.current:.4f}"

    order = {"regression": 0, "missing": 0, "still failed": 1, "fixed": 2, "new": 3, "ok": 4}
    rows = [("trial", "outcome", "score", "final loss", "step time", "notes")]
    ordered = sorted(verdict.trials, key=lambda t: (order.get(t.outcome, 5), t.key))
    for t in ordered:
        notes = [c.figure + " " + c.status for c in t.checks if c.status in ("improved", "changed")]
        rows.append(
            (
                t.key,
                t.outcome.upper() if t.regressed else t.outcome,
                score(t),
                loss(t),
                step_time(t),
                "; ".join(notes),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  ---")
    flagged = [f"  {t.key}: {reason}" for t in ordered if t.regressed for reason in t.reasons]
    n_reg = len(verdict.regressions)
    summary = (
        f"PASS: {len(verdict.trials)} trials, no regression"
        if verdict.passed
        else f"REGRESSION: {n_reg} of {len(verdict.trials)} trials"
    )
    notes = [f"warning: {w}" for w in verdict.warnings]
    match = "trial id" if verdict.match == "id" else "method, task, model, seed"
    history = f"; step times against {verdict.history}" if verdict.history else ""
    return "\n".join(
        [
            f"compare {verdict.reference} (reference) with {verdict.current}, matched by "
            f"{match}{history}",
            "",
            *lines,
            "",
            *(["flagged:", *flagged, ""] if flagged else []),
            *notes,
            summary,
        ]
    )


def write_verdict(verdict: Verdict, path: Path | str) -> Path:
    """The JSON verdict (Verdict.to_dict) at path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(verdict.to_dict(), indent=1, default=str) + "\n")
    return path
