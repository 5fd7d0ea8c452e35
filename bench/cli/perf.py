"""`hizfo-bench perf`: step time and peak memory of each method against its floors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bench.cli.errors import UsageError

if TYPE_CHECKING:
    from bench.perf import PerfSettings


def _settings(args: argparse.Namespace) -> PerfSettings:
    from bench import model_configs
    from bench.perf import PerfSettings
    from bench.perf.settings import PAPER_BATCH

    if args.paper_batch and (args.batch_size, args.seq_len) != (8, 64):
        raise UsageError("--paper-batch sets the batch: leave out --batch-size and --seq-len")
    if args.repeats < 1 or args.warmup < 0:
        raise UsageError("--repeats must be >= 1 and --warmup >= 0")
    if args.max_repeats is not None and args.max_repeats < args.repeats:
        raise UsageError("--max-repeats must be >= --repeats")
    if args.scale is not None and not 0 < args.scale <= 1:
        raise UsageError("--scale must be in (0, 1]")
    if args.scale is not None and args.model_config is None:
        raise UsageError("--scale needs --model-config")
    if args.model_config is not None:
        try:
            model_configs.resolve(args.model_config)
        except model_configs.ModelConfigError as e:
            raise UsageError(str(e)) from None
    batch_size, seq_len = PAPER_BATCH if args.paper_batch else (args.batch_size, args.seq_len)
    return PerfSettings(
        model=args.model,
        model_config=args.model_config,
        scale=args.scale,
        batch_size=batch_size,
        seq_len=seq_len,
        dtype=args.dtype,
        device=args.device,
        repeats=args.repeats,
        max_repeats=args.max_repeats if args.max_repeats is not None else 4 * args.repeats,
        warmup=args.warmup,
        methods=tuple(m for m in args.methods.split(",") if m),
        naive=not args.no_naive,
        threads=args.threads,
    )


def _rng_probe(settings: PerfSettings) -> int:
    import torch

    from bench.perf.rng import render_probe, rng_vs_matmul
    from bench.perf.workload import load_model, make_batch, model_label

    device = torch.device(settings.device or "cpu")
    model = load_model(settings, device)
    batch = make_batch(model, settings.batch_size, settings.seq_len, device)
    threads = (settings.threads,) if settings.threads else (1, 2)
    rows = rng_vs_matmul(model, batch, threads=threads, repeats=settings.repeats)
    label = f"{model_label(settings, device)}, batch {settings.batch_size} x {settings.seq_len}"
    print(render_probe(rows, label))
    return 0


def _estimate(suite: str) -> int:
    """Memory per trial and GPU-hours of a suite's final trials, and of its tuning trials
    when it tunes (bench/perf/estimates.py)."""
    from bench.config import ConfigError
    from bench.method import method_traits
    from bench.perf import estimates
    from bench.registry import load_method
    from bench.suite import load_plan

    try:
        plan = load_plan(suite, check_sources=False)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    specs = plan.specs
    unknown = sorted({s.model for s in specs} - set(estimates.model_configs.SOURCE_SHAPES))
    if unknown:
        raise UsageError(f"no shape known for {', '.join(unknown)} (bench/model_configs.py)")

    def traits(name: str):  # -> MethodTraits
        return method_traits(load_method(name))

    gpu = estimates.H100
    print(f"ESTIMATES (bench/perf/estimates.py), not measurements; {gpu.name}, MFU {estimates.MFU}")
    print(f"{'model':28s} {'method':16s} {'state GB':>9s} {'activ. GB':>9s} {'GPUs':>5s}")
    seen = set()
    for s in specs:
        key = (s.model, s.method)
        if key in seen:
            continue
        seen.add(key)
        t = traits(s.method)
        tokens = s.train.batch_size * s.train.max_length
        precision = s.train.precision or ("bf16-mixed" if s.train.dtype == "bfloat16" else "fp32")
        m = estimates.memory_bytes(
            s.model, s.method, s.to_dict()["method_config"], precision, tokens, t.step_passes[1] > 0
        )
        print(
            f"{s.model:28s} {s.method:16s} {m['state'] / 1e9:9.1f} "
            f"{m['activations'] / 1e9:9.1f} {estimates.gpus_needed(m['total'], gpu):5d}"
        )
    hours = estimates.suite_hours(specs, traits, gpu)
    print(
        f"\n{'GPU-hours':28s} {'trials':>6s} {'train':>8s} {'dev':>8s} {'sharp.':>8s} "
        f"{'eval':>8s} {'total':>8s}"
    )
    rows = list(hours.items())
    if plan.tuning is not None:
        tune = estimates.suite_hours(estimates.tuning_trials(specs, plan.tuning), traits, gpu)
        rows.append(("tuning (before extensions)", tune["all"]))
    for model, row in rows:
        total = sum(v for k, v in row.items() if k != "trials")
        print(
            f"{model:28s} {int(row['trials']):6d} {row['train']:8.1f} {row['dev']:8.1f} "
            f"{row['sharpness']:8.1f} {row['eval']:8.1f} {total:8.1f}"
        )
    return 0


def _cmd_perf(args: argparse.Namespace) -> int:
    from bench import perf

    if args.estimate:
        return _estimate(args.estimate)
    settings = _settings(args)
    if args.rng_probe:
        return _rng_probe(settings)
    summary = perf.run_perf(settings, log=lambda s: print(s, file=sys.stderr))
    perf.write_outputs(
        summary,
        out=Path(args.out) if args.out else None,
        json_path=Path(args.json) if args.json else None,
    )
    print(perf.render(summary))
    missed = [t for m in summary["models"] for t in m["targets"] if t["met"] is False]
    return 1 if args.strict and missed else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The perf subcommand."""
    pf = sub.add_parser(
        "perf", help="step time and peak memory of each method against forward/inference"
    )
    pf.add_argument("--model", default="smollm2-135m", help="model source (default embedded)")
    pf.add_argument(
        "--model-config",
        help="instead of --model: a random-init model of a paper shape, built on the device "
        "(llama-1b, llama-7b, opt-1.3b, opt-13b, opt-350m, smollm2-135m, or a transformers "
        "config JSON)",
    )
    pf.add_argument(
        "--scale",
        type=float,
        help="shrink --model-config's heads, MLP and layers by this factor "
        "(default 1 on GPU, 0.05 on CPU)",
    )
    pf.add_argument("--batch-size", type=int, default=8)
    pf.add_argument("--seq-len", type=int, default=64)
    pf.add_argument(
        "--paper-batch",
        action="store_true",
        help="batch 16 x 512, the paper's (MeZO's) tokens per step, instead of 8 x 64 "
        "(slow on CPU)",
    )
    pf.add_argument("--dtype", default="float32")
    pf.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    pf.add_argument(
        "--repeats", type=int, default=5, help="timed rounds at least (workloads interleaved)"
    )
    pf.add_argument(
        "--max-repeats",
        type=int,
        help="rounds at most, added until each ratio's 95%% interval is within +-5%% "
        "(default 4 x --repeats)",
    )
    pf.add_argument("--warmup", type=int, default=1, help="untimed rounds before them")
    pf.add_argument("--methods", default="mezo,fo-adamw,hizfo,lora", help="comma-separated")
    pf.add_argument("--no-naive", action="store_true", help="skip the naive MeZO reference")
    pf.add_argument("--threads", type=int, help="torch intra-op threads")
    pf.add_argument(
        "--rng-probe",
        action="store_true",
        help="only measure one SPSA pass (z fill + add) against the model's forward and a "
        "matmul of its shape, at 1 and 2 threads (or --threads), and the MeZO ratio they "
        "predict",
    )
    pf.add_argument(
        "--estimate",
        metavar="SUITE",
        help="only print ESTIMATES for a suite: memory per method and model (GPUs needed "
        "on an 80 GB GPU) and GPU-hours, from the memory model and the step costs",
    )
    pf.add_argument("--json", help="write the summary (perf.json) here")
    pf.add_argument("--out", help="write a run directory: trials/<id>.json and perf.json")
    pf.add_argument(
        "--strict", action="store_true", help="exit 1 when a target is missed (not undecided)"
    )
    pf.set_defaults(func=_cmd_perf)
