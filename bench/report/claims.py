"""claims.md: each of the paper's claims, the measurement, the numbers and the verdict.

The verdicts come from bench/analysis/claims.py by the rules in docs/claims.md; this
module writes them down with the scale of the run (models, tasks, the seeds that finished
per row, documents) and the unit and count of every interval, so a reader knows what a
verdict holds at. Claim 3 starts with the ZO dose. Also a plot of the score differences
with their intervals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import store
from bench.analysis.claims import (
    ClaimVerdict,
    DosePoint,
    doc_outcomes,
    evaluate_claims,
    final_records,
    fo_sizes,
    hybrid_of,
)
from bench.analysis.stats import split_settings
from bench.record import TrialRecord

_TITLES = {
    "accuracy": "Claim 1: better accuracy than first-order fine-tuning",
    "time": "Claim 2: less training time",
    "stochasticity": "Claim 3: the ZO part is beneficial stochasticity (escapes sharp minima)",
}


def claims_of_run(
    run_dir: Path, method: str | None = None, reference: str | None = None
) -> tuple[list[ClaimVerdict], list[TrialRecord], list[str]] | None:
    """The claims of one run directory as `hizfo-bench report` reads them: its trial files
    (store.read_trials), the final trials, one row per setting (stats.split_settings),
    the per-document outcomes of samples/, evaluate_claims. None without `method` rows.
    Returns (claims, the records they were read from, the settings warnings)."""
    records = [
        r for r in store.read_trials(Path(run_dir)) if r.config.get("phase", "final") == "final"
    ]
    records, warnings = split_settings(records)
    claims = claims_from(records, doc_outcomes(Path(run_dir)), method, reference)
    return None if claims is None else (claims, records, warnings)


def claims_from(
    records: Sequence[TrialRecord],
    outcomes: Mapping[str, Mapping[int, float]],
    method: str | None = None,
    reference: str | None = None,
) -> list[ClaimVerdict] | None:
    """The claims of final, setting-split records (None without `method` rows); the
    method is the run's hybrid (MethodTraits.is_hybrid) and the reference the run's
    declared one, unless given."""
    from bench.report.tables import reference_of

    labels = {r.method for r in records}
    method = method or hybrid_of(labels)
    if method is None or method not in labels:
        return None
    reference = reference or reference_of(labels)
    return evaluate_claims(records, outcomes, method=method, reference=reference)


def verdicts_of_run(run_dir: Path) -> dict[str, dict[str, str]]:
    """Each claim's verdict per task and overall ("overall"), read through the report's
    path, claims.md rendered as `report` renders it (`hizfo-bench calibrate`'s reader)."""
    got = claims_of_run(run_dir)
    if got is None:
        return {}
    claims, records, warnings = got
    render_claims(claims, records, warnings)
    return {c.key: {"overall": c.verdict, **{t.task: t.verdict for t in c.tasks}} for c in claims}


def _short(model: str) -> str:
    return Path(model).name or model


def _rows(records: Sequence[TrialRecord]) -> list[str]:
    """Per (method, task, model): the seeds that finished and the ones that failed."""
    cells: dict[tuple, dict[str, list]] = {}
    for r in final_records(records):
        cell = cells.setdefault((r.method, r.task, r.model), {"ok": [], "failed": []})
        cell["ok" if r.ok else "failed"].append(r.seed)
    lines = ["| method | task | model | seeds finished | failed |", "|---|---|---|---|---|"]
    for (method, task, model), c in sorted(cells.items()):
        ok = sorted(c["ok"])
        failed = sorted(c["failed"])
        lines.append(
            f"| {method} | {task} | {_short(model)} | {len(ok)} {ok} | "
            f"{failed if failed else '-'} |"
        )
    return lines


def _scale(records: Sequence[TrialRecord]) -> str:
    finals = final_records(records)
    models = sorted({_short(r.model) for r in finals})
    tasks = sorted({r.task for r in finals})
    docs = sorted({r.eval_samples for r in finals if r.eval_samples})
    steps = sorted({r.steps for r in finals if r.steps})
    return (
        f"Scale of this run: models {', '.join(models)}; tasks {', '.join(tasks)}; test "
        f"documents per trial {docs}; steps {steps}. A verdict holds at this scale only."
    )


def _one_seed(records: Sequence[TrialRecord]) -> bool:
    seeds: dict[tuple, set] = {}
    for r in final_records(records):
        if r.ok:
            seeds.setdefault((r.method, r.task, r.model), set()).add(r.seed)
    return bool(seeds) and max(len(s) for s in seeds.values()) < 2


def _interval_text(iv: Any, digits: int = 4, scale: float = 1.0, kind: str = "f") -> str:
    if iv is None:
        return "n/a"
    text = f"{iv.mean * scale:+.{digits}{kind}}"
    if iv.lo is not None and iv.hi is not None:
        text += f" [{iv.lo * scale:+.{digits}{kind}}, {iv.hi * scale:+.{digits}{kind}}]"
    return text


def _dose_response(points: Sequence[DosePoint]) -> list[str]:
    """Claim 3 at every ZO rate of the run: the dose (final dev loss, ZO on minus off),
    the gate's power for the declared dose, and the verdict with its parts there."""
    lines = [
        "### Dose-response (claim 3 at each ZO rate; the claim's verdict is the suite's "
        "own method's row; sharpness and score are shown at every rate, judged only where "
        "the dose gate opened)",
        "",
        "| method | zo_lr | task | dose: dev loss, ZO on - off (95%) | seeds | gate power "
        "(declared dose) | sharpness, on - off (95%) | score x100, on - off (95%) | "
        "verdict at this rate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        c = p.dose.comparison
        sharp = _interval_text(p.sharpness.interval if p.sharpness else None, 2, kind="e")
        score = _interval_text(p.score.interval if p.score else None, 1, 100)
        rate = "-" if p.zo_lr is None else f"{p.zo_lr:.2e}"
        power = "-" if p.dose.power is None else f"{p.dose.power:.0%}"
        lines.append(
            f"| {p.method} | {rate} | {p.verdict.task} | "
            f"{_interval_text(None if c is None else c.interval)} | "
            f"{'-' if c is None else c.seeds} | {power} | {sharp} | {score} | "
            f"{p.verdict.verdict} |"
        )
    return [*lines, ""]


def render_claims(
    claims: Sequence[ClaimVerdict],
    records: Sequence[TrialRecord],
    warnings: Sequence[str] = (),
) -> str:
    lines = ["# The paper's claims, tested on this run", "", _scale(records), ""]
    lines += _rows(records) + [""]
    method = hybrid_of({r.method for r in records})
    sizes = (
        {v: x for v, x in fo_sizes(records, method).items() if "[zo-" not in v} if method else {}
    )
    if sizes:
        lines += [
            f"FO set of each variant, in parameters relative to {method}'s (a same-size "
            "ablation is near 1; one far below trains a smaller FO part, so its difference "
            f"from {method} mixes the selection with the FO budget): "
            + ", ".join(f"{v} {x:.2f}x" for v, x in sorted(sizes.items())),
            "",
        ]
    if _one_seed(records):
        lines += [
            "**One seed.** Every interval below is over the test documents of one trained "
            "model per method: it cannot include the variance between seeds, so no verdict "
            "is declared from it (run 3 or more seeds).",
            "",
        ]
    for w in warnings:
        lines += [f"Warning: {w}", ""]
    lines += ["| claim | verdict | per task |", "|---|---|---|"]
    for c in claims:
        per = "; ".join(f"{t.task} ({_short(t.model)}): {t.verdict}" for t in c.tasks) or "-"
        lines.append(f"| {_TITLES.get(c.key, c.key)} | **{c.verdict}** | {per} |")
    for c in claims:
        lines += ["", f"## {_TITLES.get(c.key, c.key)}: **{c.verdict}**", ""]
        lines += [f"Claim: {c.statement}", "", f"Measurement: {c.measurement}", ""]
        if c.note:
            lines += [c.note, ""]
        doses = [t for t in c.tasks if t.dose]
        if doses:
            lines += ["### ZO dose (before any verdict)", ""]
            for t in doses:
                lines.append(f"- {t.task} ({_short(t.model)}): " + "; ".join(t.dose))
            lines.append("")
        if c.sweep:
            lines += _dose_response(c.sweep)
        if c.tasks:
            lines += ["| task | model | verdict | evidence | power |", "|---|---|---|---|---|"]
            for t in c.tasks:
                evidence = "; ".join(t.evidence) or "-"
                lines.append(
                    f"| {t.task} | {_short(t.model)} | {t.verdict} | {evidence} | "
                    f"{t.power or '-'} |"
                )
    lines += [
        "",
        "Rules (declared before data, docs/claims.md): per task, supported / contradicted "
        "when the 95% interval lies entirely on the claimed / the other side of no effect "
        "(each at most 2.5% likely under no effect, as `hizfo-bench calibrate` measures), "
        "inconclusive when it contains it, no verdict with one seed; across tasks, "
        "supported / contradicted only when every task is, mixed when tasks disagree. "
        "Power: seeds for 80% power at the declared smallest effect of interest, from this "
        "run's seed and document variance (prospective, not the observed difference).",
    ]
    return "\n".join(lines) + "\n"


def claims_plot(claims: Sequence[ClaimVerdict], folder: Path) -> list[Path]:
    """Score differences (x100) with 95% intervals, one panel per claim that has them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for c in claims:
        rows = [
            (f"{t.task}\n{comp.method} - {comp.reference}", comp)
            for t in c.tasks
            for comp in t.comparisons
            if "documents" in comp.unit and comp.interval is not None
        ]
        if rows:
            panels.append((c, rows))
    paths: list[Path] = []
    for c in claims:
        if c.sweep:
            paths += dose_response_plot(c.sweep, folder)
    if not panels:
        return paths
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.5), squeeze=False)
    for ax, (c, rows) in zip(axes[0], panels, strict=True):
        for i, (_label, comp) in enumerate(rows):
            iv = comp.interval
            assert iv is not None  # the panels hold compared intervals only
            lo = iv.lo if iv.lo is not None else iv.mean
            hi = iv.hi if iv.hi is not None else iv.mean
            ax.errorbar(
                100 * iv.mean,
                i,
                xerr=[[100 * (iv.mean - lo)], [100 * (hi - iv.mean)]],
                fmt="o",
                capsize=4,
                color="C0" if comp.direction >= 0 else "C3",
            )
        ax.axvline(0, color="0.4", linestyle=":")
        ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
        ax.set_xlabel(f"test score difference x100 (95%, {rows[0][1].unit})", fontsize=8)
        ax.set_title(f"{c.key}: {c.verdict}", fontsize=10)
    folder.mkdir(parents=True, exist_ok=True)
    own = [folder / "claims.png", folder / "claims.pdf"]
    for p in own:
        fig.savefig(p, bbox_inches="tight")
    plt.close(fig)
    return own + paths


def dose_response_plot(points: Sequence[DosePoint], folder: Path) -> list[Path]:
    """Claim 3's dose-response: dev-loss difference and sharpness difference (ZO on minus
    off, 95% intervals over seeds) against the ZO rate, one line per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    tasks = sorted({p.verdict.task for p in points})
    for k, task in enumerate(tasks):
        mine = [p for p in points if p.verdict.task == task and p.zo_lr]
        for ax, get in (
            (axes[0], lambda p: p.dose.comparison),
            (axes[1], lambda p: p.sharpness),
        ):
            xs, ys, lo, hi = [], [], [], []
            for p in mine:
                comp = get(p)
                if comp is None or comp.interval is None:
                    continue
                iv = comp.interval
                xs.append(p.zo_lr)
                ys.append(iv.mean)
                lo.append(iv.mean - (iv.lo if iv.lo is not None else iv.mean))
                hi.append((iv.hi if iv.hi is not None else iv.mean) - iv.mean)
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o-", capsize=4, color=f"C{k}", label=task)
    for ax, label in (
        (axes[0], "dev loss, ZO on - off (last point)"),
        (axes[1], "random-direction sharpness, on - off"),
    ):
        ax.axhline(0, color="0.4", linestyle=":")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no crowded labels
        ax.set_xlabel("zo_lr")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    axes[1].set_title("judged only where the dose gate opened", fontsize=9)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "dose_response.png", folder / "dose_response.pdf"]
    for path in paths:
        fig.savefig(path)
    plt.close(fig)
    return paths
