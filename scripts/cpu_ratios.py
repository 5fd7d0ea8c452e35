"""MeZO's and Hi-ZFO's CPU step ratios of two trees, timed in one interleaved run.

    .venv/bin/python scripts/cpu_ratios.py --before c6f22e5 --out results/perf/cpu-ratios

Each tree (`--before`, checked out into a temporary git worktree, and this one) runs in
its own process, in turns (before, after, before, after, ...: `--alternations` each),
so a change in the box's state lands on both alike. A process loads the model
(SmolLM2-135M unless `--model`), builds each method through its tree's registry with the
default config, and times `--rounds` rounds of [step, forward, forward] (mezo) and
[step, forward, forward, partial forward + backward] (hizfo, its FO set requiring
grad), the floors of `hizfo-bench perf` (step_over_two_forwards, step_over_own_floor),
after one untimed round. The after-tree process also times the Gaussian draw floor: a
`normal_` over the model's parameter count in 32 buckets and one `add_` over it, the
work a seeded perturbation pass cannot avoid on a CPU (docs/performance.md).

Writes `<out>/cpu_ratios.json` (every round's seconds) and `<out>/cpu_ratios.md` (the
ratios: geometric mean over rounds of step / floor, with a 95% interval from
bench.perf.timing.ratio_interval); `--table <out>/cpu_ratios.json` prints that table
again from the rounds (tests/packages/bench/test_cpu_ratios_published.py). `--no-before`
times this tree alone. Time it on an idle box: the numbers are only as good
as the box is quiet (the script prints the load average before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("mezo", "hizfo")


def _child(
    model_name: str, rounds: int, batch: tuple[int, int], draw_floor: bool
) -> dict[str, Any]:
    """Time each method's rounds in this process (this tree's code)."""
    import torch

    out: dict[str, Any] = {"threads": torch.get_num_threads(), "methods": {}}
    for name in METHODS:
        out["methods"][name], out["parameters"] = _time_method(name, model_name, rounds, batch)
    if draw_floor:
        out["draw_floor"] = _draw_floor(out["parameters"], rounds)
    return out


def _time_method(
    name: str, model_name: str, rounds: int, batch: tuple[int, int]
) -> tuple[dict[str, list[float]], int]:
    """Seconds of each phase per round (after one untimed round) and the parameter count."""
    import torch

    from bench.config import build
    from bench.method import TrainContext
    from bench.perf.settings import PerfSettings
    from bench.perf.workload import load_model, make_batch
    from bench.registry import load_method

    device = torch.device("cpu")
    cls = load_method(name)
    method = cls(build(cls.config_class, {}, name))
    model = load_model(PerfSettings(model=model_name), device)
    data = make_batch(model, batch[0], batch[1], device)
    ctx = TrainContext(
        total_steps=rounds + 2, seed=0, device=device, sample_batches=lambda n: [data] * n
    )
    model = method.setup(model, ctx)

    def forward() -> None:
        with torch.no_grad():
            ctx.loss_fn(model, data)

    def partial_backward() -> None:
        grads = [p for p in model.parameters() if p.requires_grad]
        with torch.enable_grad():
            ctx.loss_fn(model, data).backward()
        for p in grads:
            p.grad = None

    phases: dict[str, Any] = {"step": None, "forward": forward, "forward2": forward}
    if name == "hizfo":
        phases["partial_backward"] = partial_backward
    seconds: dict[str, list[float]] = {k: [] for k in phases}
    for i in range(rounds + 1):
        for phase, fn in phases.items():
            t0 = time.perf_counter()
            if fn is None:
                method.step(data, i)
            else:
                fn()
            if i:  # the first round is a warm-up
                seconds[phase].append(time.perf_counter() - t0)
    return seconds, sum(p.numel() for p in model.parameters())


def _draw_floor(numel: int, rounds: int) -> dict[str, list[float]]:
    """Seconds of a Gaussian draw over `numel` elements in 32 buckets through one
    torch.Generator, and of one add_ over `numel` elements (a pass's two parts)."""
    import torch

    bucket = -(-numel // 32)
    buffer, flat = torch.empty(bucket), torch.zeros(numel)
    generator = torch.Generator().manual_seed(0)
    out: dict[str, list[float]] = {"draw": [], "add": []}
    for i in range(rounds + 1):
        t0 = time.perf_counter()
        for _ in range(32):
            buffer.normal_(generator=generator)
        t1 = time.perf_counter()
        for start in range(0, numel, bucket):
            flat[start : start + bucket].add_(buffer[: min(bucket, numel - start)], alpha=1e-3)
        t2 = time.perf_counter()
        if i:
            out["draw"].append(t1 - t0)
            out["add"].append(t2 - t1)
    return out


def _worktree(rev: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="cpu-ratios-")) / rev
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev],
        check=True,
        capture_output=True,
    )
    return path


def _run_child(tree: Path, args: argparse.Namespace, draw_floor: bool) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--model",
        args.model,
        "--rounds",
        str(args.rounds),
        "--batch",
        args.batch,
    ] + (["--draw-floor"] if draw_floor else [])
    done = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"cpu_ratios: the child in {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ratios(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-round ratios over all of a tree's runs, with their median and 95% interval."""
    from bench.perf.timing import ratio_interval

    step_m, floor_m, step_h, floor_h = [], [], [], []
    for run in runs:
        m, h = run["methods"]["mezo"], run["methods"]["hizfo"]
        step_m += m["step"]
        floor_m += [a + b for a, b in zip(m["forward"], m["forward2"], strict=True)]
        step_h += h["step"]
        floor_h += [
            a + b + c
            for a, b, c in zip(h["forward"], h["forward2"], h["partial_backward"], strict=True)
        ]
    return {
        "mezo_step_over_two_forwards": ratio_interval(step_m, floor_m),
        "hizfo_step_over_own_floor": ratio_interval(step_h, floor_h),
        "mezo_step_seconds": sorted(step_m)[len(step_m) // 2],
        "hizfo_step_seconds": sorted(step_h)[len(step_h) // 2],
        "forward_seconds": sorted(floor_m)[len(floor_m) // 2] / 2,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="c6f22e5", help="the tree to compare with (a git rev)")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--alternations", type=int, default=2)
    parser.add_argument("--batch", default="8x64", help="batch size x sequence length")
    parser.add_argument(
        "--no-before", action="store_true", help="time this tree only (no comparison)"
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--table", type=Path, default=None, help="print the table of a written cpu_ratios.json"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--draw-floor", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.table is not None:
        result = json.loads(args.table.read_text())
        # The ratios are recomputed from every round's seconds, not read from the file.
        result["ratios"] = {label: _ratios(r) for label, r in result["runs"].items() if r}
        print(_table(result), end="")
        return 0
    try:
        batch = tuple(int(x) for x in args.batch.lower().split("x"))
    except ValueError:
        batch = ()
    if len(batch) != 2 or min(batch) < 1:
        print(f"cpu_ratios: --batch must be like 8x64, got {args.batch!r}", file=sys.stderr)
        return 2
    if args.child:
        print(json.dumps(_child(args.model, args.rounds, batch, args.draw_floor)))
        return 0
    if args.out is None:
        print("cpu_ratios: --out DIR is required", file=sys.stderr)
        return 2
    before_tree = None if args.no_before else _worktree(args.before)
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    trees = [("after", ROOT)] if before_tree is None else [("before", before_tree), ("after", ROOT)]
    try:
        for k in range(args.alternations):
            for label, tree in trees:
                print(f"cpu_ratios: {label} ({k + 1}/{args.alternations}) ...", file=sys.stderr)
                runs[label].append(_run_child(tree, args, draw_floor=label == "after" and k == 0))
    finally:
        if before_tree is not None:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before_tree)],
                capture_output=True,
            )
    result = {
        "before": None if before_tree is None else args.before,
        "after": subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "model": args.model,
        "batch": args.batch,
        "rounds": args.rounds,
        "alternations": args.alternations,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "runs": runs,
        "ratios": {label: _ratios(r) for label, r in runs.items() if r},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu_ratios.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "cpu_ratios.md").write_text(_table(result))
    print(_table(result), end="")
    return 0


def _table(result: dict[str, Any]) -> str:
    def cell(r: dict[str, Any]) -> str:
        if r["low"] is None:
            return f"{r['value']:.3f}"
        return f"{r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"

    lines = [
        f"{result['model']}, batch {result['batch']}, {result['rounds']} rounds x "
        f"{result['alternations']} alternations per tree; load average "
        f"{result['load_average']['before'][0]:.2f} -> {result['load_average']['after'][0]:.2f}",
        "",
        "| tree | MeZO step / two forwards | Hi-ZFO step / own floor | MeZO step | Hi-ZFO step | forward |",
        "|---|---|---|---|---|---|",
    ]
    for label in ("before", "after"):
        if label not in result["ratios"]:
            continue
        r = result["ratios"][label]
        rev = result[label]
        lines.append(
            f"| {label} ({rev}) | {cell(r['mezo_step_over_two_forwards'])} | "
            f"{cell(r['hizfo_step_over_own_floor'])} | {r['mezo_step_seconds']:.3f} s | "
            f"{r['hizfo_step_seconds']:.3f} s | {r['forward_seconds']:.3f} s |"
        )
    floor = result["runs"]["after"][0].get("draw_floor")
    if floor:
        draw = sorted(floor["draw"])[len(floor["draw"]) // 2]
        add = sorted(floor["add"])[len(floor["add"]) // 2]
        lines += [
            "",
            f"Draw floor (after tree): a Gaussian draw over the {result['runs']['after'][0]['parameters']:,} "
            f"parameters in 32 buckets {draw:.3f} s, one add_ over them {add:.3f} s: a seeded "
            f"pass costs at least {draw + add:.3f} s, three passes {3 * (draw + add):.3f} s.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
