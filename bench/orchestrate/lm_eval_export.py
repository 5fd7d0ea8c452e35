"""The suite's lm-eval tasks, kept in the run directory: ``<run>/lm_eval_tasks/``.

Scoring writes each task's YAML into a temporary folder and deletes it; a run also
keeps them, one folder per task (``<run>/lm_eval_tasks/<task>/``: the YAML, the test
documents as JSONL and ``hizfo_task_functions.py``, the shim through which the YAML's
``!function`` entries reach ``bench.tasks.lm_eval_functions``), so lm-eval's own CLI
scores any checkpoint with the suite's prompts, stop sequences, ``max_gen_toks`` and
``process_results``::

    lm_eval --model hf --model_args pretrained=<checkpoint> \\
        --include_path <run>/lm_eval_tasks --tasks hizfo_math_mini --limit 30

``lm_eval_tasks/README.md`` lists the exact command of each task (its lm-eval name, the
suite's ``eval.limit`` and batch size). The YAML names its data file by absolute path
(lm-eval reads relative ones against the working directory), and the shim needs
hizfo-bench installed where lm_eval runs.
"""

from __future__ import annotations

import logging
import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.tasks import Task, get_task

EXPORT = "lm_eval_tasks"

log = logging.getLogger(__name__)


def export_tasks(specs: Sequence[Any], run_dir: Path) -> list[Path]:
    """One lm-eval task folder per task of the final `specs` under
    ``<run_dir>/lm_eval_tasks/``, and its README.md; returns the YAML files written.

    A task that cannot be written (its data unavailable here) is left out with a
    warning: the folder is a courtesy, never worth a run."""
    first: dict[str, Any] = {}
    gen_toks: dict[str, set[int]] = {}
    for spec in specs:
        if spec.phase != "final":
            continue
        first.setdefault(spec.task, spec)
        gen_toks.setdefault(spec.task, set()).add(spec.eval.max_gen_toks)
    if not first:
        return []
    root = Path(run_dir).resolve() / EXPORT
    written, commands = [], []
    for name, spec in sorted(first.items()):
        try:
            task = get_task(spec.task, spec.task_config)
            path, command = export_task(
                task,
                root / name,
                max_gen_toks=spec.eval.max_gen_toks,
                batch_size=spec.eval.batch_size,
                limit=spec.eval.limit,
                include_path=root,
            )
        except Exception as e:  # a hub task offline, a full disk: the run goes on
            log.warning("lm_eval_tasks: task %s not written (%s: %s)", name, type(e).__name__, e)
            continue
        written.append(path)
        note = ""
        if len(gen_toks[name]) > 1:
            note = (
                f" (max_gen_toks {spec.eval.max_gen_toks}, {spec.method}'s; the suite's "
                f"methods use {', '.join(map(str, sorted(gen_toks[name])))})"
            )
        commands.append(f"- `{name}`{note}:\n\n  ```\n  {shlex.join(command)}\n  ```\n")
    if written:
        (root / "README.md").write_text(
            "# The suite's lm-eval tasks\n\n"
            "Score any checkpoint (a `save: final` folder, a hub id) exactly as the suite "
            "scored its trials: the same prompts, stop sequences, max_gen_toks and "
            "process_results. Needs hizfo-bench installed (the YAMLs' functions live in "
            "`bench.tasks.lm_eval_functions`); the data files are named by absolute path.\n\n"
            + "\n".join(commands)
        )
    return written


def export_task(
    task: Task,
    folder: Path,
    *,
    max_gen_toks: int,
    batch_size: int,
    limit: int | None,
    include_path: Path | None = None,
) -> tuple[Path, list[str]]:
    """Write `task`'s lm-eval folder (YAML, test documents, function shim) into `folder`,
    replacing what was there; return the YAML's path and the lm_eval command that scores
    a checkpoint with it (``--include_path`` the folder, or `include_path`)."""
    folder = Path(folder).resolve()
    if folder.exists():
        shutil.rmtree(folder)
    lm_name = task.write_lm_eval_task(folder, max_gen_toks=max_gen_toks)
    command = ["lm_eval", "--model", "hf", "--model_args", "pretrained=<checkpoint>"]
    command += ["--include_path", str(include_path or folder), "--tasks", lm_name]
    command += ["--batch_size", str(batch_size)]
    if limit is not None:
        command += ["--limit", str(limit)]
    return folder / f"{lm_name}.yaml", command
