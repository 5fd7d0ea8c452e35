"""What `hizfo-bench perf` writes: trial records, perf.json and the printed tables.

``perf.json`` holds every measurement, the ratios with their intervals and the targets;
with ``--out``, a run directory whose ``trials/<id>.json`` hold one trial record per
method row and model (task "perf", seed 0, score null, train_seconds = median step time,
peak_memory_bytes as in workload.py, metrics = the ratios), which `hizfo-bench compare`
tracks like any run.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.format import fmt_mib, fmt_s, id_slug
from bench.perf.settings import PerfSettings
from bench.record import TrialRecord


def trial_record(
    label: str,
    source: str,
    result: dict[str, Any],
    ratios: dict[str, float | None],
    settings: PerfSettings,
    environment: dict[str, Any],
) -> dict[str, Any]:
    """A TrialRecord (bench/record.py) for one method row on one model."""
    ok = result.get("status") == "ok"
    metrics: dict[str, Any] = {k: v for k, v in ratios.items() if v is not None}
    if ok:
        metrics.update(
            step_seconds_median=result["median_seconds"],
            step_seconds_min=result["min_seconds"],
            setup_seconds=result["setup_seconds"],
        )
    return TrialRecord(
        trial_id=f"perf-{id_slug(label)}-{id_slug(source)}-{settings.dtype}",
        method=label,
        task="perf",
        model=source,
        seed=0,
        status="ok" if ok else "failed",
        error=result.get("error"),
        metrics=metrics,
        train_seconds=result.get("median_seconds"),
        peak_memory_bytes=result.get("peak_bytes"),
        memory=result.get("memory"),
        steps=settings.warmup + len(result["seconds"]) if ok else 0,
        passes=result.get("passes_per_step"),
        config={
            "perf": asdict(settings),
            "model": source,
            "method_config": result.get("method_config"),
        },
        environment=environment,
        # Every timed round: the samples `compare --history` tests step times on.
        step_seconds=result["seconds"] if ok else None,
        threads=result["threads"] if ok else None,
        extra={"ops": result["ops"]} if ok else {},
    ).to_dict()


def write_outputs(summary: dict[str, Any], *, out: Path | None, json_path: Path | None) -> None:
    """perf.json at json_path and/or a run directory at out (trials/ + perf.json)."""
    from bench.store import write_json_atomic, write_trial

    if out is not None:
        for record in summary["trials"]:
            write_trial(out, record)
        write_json_atomic(Path(out) / "perf.json", summary)
    if json_path is not None:
        write_json_atomic(Path(json_path), summary)


def _fingerprint_line(summary: dict[str, Any]) -> str:
    env = summary.get("environment") or {}
    fp = env.get("machine") or {}
    gpus = ", ".join(g["name"] for g in fp.get("gpus") or []) or "no GPU"
    return (
        f"machine {env.get('machine_key', '?')}: {fp.get('cpu_model') or '?'}, "
        f"{fp.get('cpu_count')} cores, {gpus}; torch {(env.get('packages') or {}).get('torch')}, "
        f"{env.get('torch_threads')} threads"
    )


def _ratio_text(value: float | None, interval: dict[str, Any]) -> str:
    if value is None:
        return f"{'-':>7s}"
    text = f"{value:7.3f}"
    if interval.get("low") is not None:
        text += f" [{interval['low']:.3f}, {interval['high']:.3f}] n={interval['n']}"
    return text


def render(summary: dict[str, Any]) -> str:
    """Plain-text tables of every model's measurements, ratios (with their 95% intervals
    and thread counts) and targets, under the machine fingerprint (timings mean something
    only next to the machine and its load)."""
    lines = [_fingerprint_line(summary)]
    for m in summary["models"]:
        lines.append(
            f"\n{m['model']} ({m['parameters'] / 1e6:.1f}M parameters) on {summary['device']}, "
            f"load average {m['loadavg_before']} -> {m['loadavg_after']}"
        )
        lines.append(f"  {'phase':30s} {'median':>10s} {'min':>10s} {'peak':>12s} threads")
        rows = [(k, v) for k, v in m["references"].items()] + list(m["methods"].items())
        for label, r in rows:
            if r.get("status", "ok") != "ok":
                lines.append(f"  {label:30s} failed: {r.get('error')}")
                continue
            lines.append(
                f"  {label:30s} {fmt_s(r['median_seconds'], 3, 8):>10s} "
                f"{fmt_s(r['min_seconds'], 3, 8):>10s} {fmt_mib(r['peak_bytes'], 1, 8):>12s}"
                f" {r.get('threads')}"
            )
            for floor, f in (r.get("floors") or {}).items():
                lines.append(
                    f"    {'beside it: ' + floor:28s} {fmt_s(f['median_seconds'], 3, 8):>10s} "
                    f"{fmt_s(f['min_seconds'], 3, 8):>10s}"
                )
            if ops := r.get("ops"):
                lines.append(
                    f"    operator calls: step {ops['step']}, floor {ops['floor']} "
                    f"(+{ops['step'] - ops['floor']}; forward {ops['forward']}, "
                    f"partial forward + backward {ops['partial_backward']})"
                )
        targets: dict[str, list[dict[str, Any]]] = {}
        for t in m["targets"]:
            targets.setdefault(t["ratio"], []).append(t)
        lines.append("  ratios (value [95% interval] rounds; target: met / MISSED / why none):")
        intervals = m.get("intervals") or {}
        for key, value in m["ratios"].items():
            text = f"    {key:50s} {_ratio_text(value, intervals.get(key, {}))}"
            for t in targets.get(key, []):
                text += f"  <= {t['limit']:<5} {t['verdict']}"
            lines.append(text)
        missed = [t["ratio"] for t in m["targets"] if t["met"] is False]
        undecided = sum(t["met"] is None for t in m["targets"])
        lines.append(
            f"  targets: {sum(t['met'] is True for t in m['targets'])} met, {len(missed)} missed"
            + (f" ({', '.join(missed)})" if missed else "")
            + f", {undecided} without a verdict"
        )
    return "\n".join(lines)
