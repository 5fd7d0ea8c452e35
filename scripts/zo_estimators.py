"""MeZO-GV and MeZO-Greedy against MeZO on a zo-estimators run (issue 34): the dev-loss
drop from step 0 per step and per forward pass, the mean over seeds with a 95% t
interval, and the paired differences with MeZO on the same seed (same data order, same
start) at the same steps and at the same forward passes.

MeZO runs 3x the pool methods' steps with a dev point every 5, so its step S is their
step count and its dev point at their forward count (6 forwards a step at M = 4) is the
equal-forward comparison (results/published/zo-estimators/suite.yaml).

    python scripts/zo_estimators.py RUN_DIR            # print the table
    python scripts/zo_estimators.py RUN_DIR --write    # into RUN_DIR/estimators.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scipy import stats

POOL = ("mezo-gv", "mezo-greedy")


def _ci(values: list[float], scale: float = 1.0) -> str:
    v = [scale * x for x in values]
    mean = sum(v) / len(v)
    if len(v) < 2:
        return f"{mean:+.4f}"
    low, high = stats.t.interval(0.95, len(v) - 1, loc=mean, scale=stats.sem(v))
    return f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]"


def _drop(curve: list[dict], key: str, value: int) -> float:
    point = next(p for p in curve if p[key] == value)
    return curve[0]["dev_loss"] - point["dev_loss"]


def _curves(run_dir: Path) -> dict[str, dict[int, list[dict]]]:
    curves: dict[str, dict[int, list[dict]]] = {}
    for path in sorted((run_dir / "trials").glob("*.json")):
        record = json.loads(path.read_text())
        if record["status"] == "ok":
            curves.setdefault(record["method"], {})[record["seed"]] = record["eval_curve"]
    return curves


def table(run_dir: Path) -> str:
    """The Markdown this script prints: the per-method table and the paired lines."""
    curves = _curves(run_dir)
    mezo = curves["mezo"]
    steps = curves[POOL[0]][min(curves[POOL[0]])][-1]["step"]
    forwards = curves[POOL[0]][min(curves[POOL[0]])][-1]["forward"]
    seeds = sorted(set(mezo).intersection(*(curves[m] for m in POOL)))
    lines = [
        f"Dev-loss drop from step 0 on math-mini, SmolLM2-135M, seeds {seeds}: mean [95% t "
        "interval over seeds].",
        "",
        "| method | steps | forward passes | drop | drop per step (x1e3) | drop per forward (x1e3) |",
        "|---|---|---|---|---|---|",
    ]
    rows = [("mezo", "step", steps), ("mezo", "forward", forwards)]
    rows += [(m, "step", steps) for m in POOL]
    for method, key, value in rows:
        points = [next(p for p in curves[method][s] if p[key] == value) for s in seeds]
        drops = [_drop(curves[method][s], key, value) for s in seeds]
        n_steps, n_fwd = points[0]["step"], points[0]["forward"]
        lines.append(
            f"| {method} | {n_steps} | {n_fwd} | {_ci(drops)} | "
            f"{_ci([d / n_steps for d in drops], 1e3)} | {_ci([d / n_fwd for d in drops], 1e3)} |"
        )
    lines += [
        "",
        "Paired with MeZO on the same seed (positive: the pool method's dev loss fell more):",
        "",
    ]
    for method in POOL:
        mine = [_drop(curves[method][s], "step", steps) for s in seeds]
        same_steps = [m - _drop(mezo[s], "step", steps) for m, s in zip(mine, seeds, strict=True)]
        same_fwd = [
            m - _drop(mezo[s], "forward", forwards) for m, s in zip(mine, seeds, strict=True)
        ]
        lines.append(
            f"- {method} - mezo at {steps} steps each: {_ci(same_steps)}; at {forwards} "
            f"forward passes each: {_ci(same_fwd)} (per seed: "
            f"{', '.join(f'{x:+.4f}' for x in same_steps)}; {', '.join(f'{x:+.4f}' for x in same_fwd)})"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--write", action="store_true", help="write RUN_DIR/estimators.md")
    args = parser.parse_args()
    text = table(args.run_dir)
    if args.write:
        (args.run_dir / "estimators.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
