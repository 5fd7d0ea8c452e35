"""`hizfo-bench show`: a few per-document eval records of one trial."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.errors import UsageError


def _find_samples(run_dir: Path, trial: str) -> Path:
    """The samples file of the one trial whose id is `trial` or starts with it."""
    folder = run_dir / "samples"
    if not folder.is_dir():
        raise UsageError(f"{run_dir} has no samples/ folder (not a run dir, or nothing scored yet)")
    exact = folder / f"{trial}.jsonl"
    if exact.is_file():
        return exact
    matches = sorted(p for p in folder.glob("*.jsonl") if p.stem.startswith(trial))
    if not matches:
        raise UsageError(f"no trial {trial!r} with samples in {run_dir}")
    if len(matches) > 1:
        shown = ", ".join(p.stem for p in matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise UsageError(f"{trial!r} matches {len(matches)} trials: {shown}")
    return matches[0]


def _clip(text: object, limit: int) -> str:
    """One block of text, its tail kept (the end of a prompt is what the model answers)."""
    text = str(text)
    return text if len(text) <= limit else "..." + text[-limit:]


def _cmd_show(args: argparse.Namespace) -> int:
    from bench import store
    from bench.evaluate import read_samples

    path = _find_samples(Path(args.run_dir), args.trial)
    record = store.trials_dir(Path(args.run_dir)) / f"{path.stem}.json"
    if record.is_file():  # a file that breaks the contract: ContractError, one line, exit 2
        store.read_trial(record)
    samples = read_samples(path)
    scores = [s["score"] for s in samples if s.get("score") is not None]
    mean = f", mean score {sum(scores) / len(scores):.4f}" if scores else ""
    print(f"{path.stem}: {len(samples)} documents{mean}")
    for sample in samples[: max(0, args.n)]:
        print(f"\n--- doc {sample['doc_id']}  score {sample.get('score')}")
        print(f"prompt:     {_clip(sample.get('prompt'), 600)}")
        print(f"generation: {_clip(sample.get('generation'), 600)}")
        for name, value in (sample.get("filtered") or {}).items():
            print(f"  {name}: {_clip(value, 200)}")
        print(f"target:     {_clip(sample.get('target'), 600)}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The show subcommand."""
    show = sub.add_parser(
        "show",
        help="a few per-document eval records of a trial (prompt, generation, target, score)",
    )
    show.add_argument("run_dir", metavar="RUN_DIR")
    show.add_argument("trial", metavar="TRIAL", help="trial id, or a prefix of one")
    show.add_argument("-n", type=int, default=3, help="records to print (default 3)")
    show.set_defaults(func=_cmd_show)
