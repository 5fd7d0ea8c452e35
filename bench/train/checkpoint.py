"""Trial checkpoints: the trained model for others to load, and resumable loop states.

A trial with ``train.save: final`` writes its trained model to
``<run>/checkpoints/<trial_id>/`` when training ends: the weights with
``save_pretrained`` (safetensors shards of at most ``SHARD_SIZE``, so writing never holds
a second copy of the whole model) and the tokenizer, so the folder loads with
``transformers.AutoModelForCausalLM.from_pretrained(folder)`` and scores with
``lm_eval --model hf --model_args pretrained=folder``, plus the method's state
(``method_state.pt``: ``Method.state_dict()``, e.g. AdamW's moments or Hi-ZFO's FO set)
and the loop state below. A trial with ``train.save_every: N`` writes the same every N
steps into ``step-<N>/`` below that folder; each new one replaces the one before.

The loop state (``loop_state.pt``) is what continuing needs beyond weights and method
state: the steps done, the positions of the training and profiling batch streams (batches
drawn), the Python, NumPy, torch and CUDA random states, the loss window not yet logged,
the curve, evaluation points, passes, tokens, step extras and the clocks so far. A trial
that starts while its folder holds a checkpoint (a retry after its worker died, or a run
resumed after a kill: the trial file is missing or says failed) loads the latest one and
continues from its step, with bit for bit the losses of an uninterrupted run
(tests/packages/bench/train/test_checkpoint.py). The final checkpoint is a loop state at
the last step, so a trial killed during its evaluation does not train again.

A checkpoint is complete once its ``checkpoint.json`` exists: every other file of it and
its folders are fsynced first, ``checkpoint.json`` is written last (fsynced, renamed,
the folder fsynced), and intermediate checkpoints are built in a ``.tmp`` folder renamed
into place, so neither a kill nor a power cut while writing leaves a checkpoint that
claims to be complete and is not. The two newest intermediate checkpoints are kept
(``KEEP_INTERMEDIATE``). A checkpoint that does not load anyway (a damaged file, a
``checkpoint.json`` that does not parse) is skipped with a warning naming its folder and
file, and the trial resumes from the newest one that loads, or from step 0: every file
is read and checked before the live model is touched, so a skipped checkpoint changes
nothing and the losses stay bit for bit those of an uninterrupted run. When the trial
ends ok, its intermediate checkpoints are removed (the final one, if any, stays).

LoRA (any method that exposes its peft wrapper as ``peft_model``): the adapter goes to
``adapter/`` with peft's ``save_pretrained`` (resume reads it back from there), and a
final checkpoint also holds the merged model at the top (a merged copy is made for
writing; the trained model in memory keeps its adapters), so it loads like any other.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from bench.data import batch_stream

log = logging.getLogger("hizfo_bench.train")

CHECKPOINTS = "checkpoints"
META = "checkpoint.json"
METHOD_STATE = "method_state.pt"
LOOP_STATE = "loop_state.pt"
ADAPTER = "adapter"
SHARD_SIZE = "256MB"
# Called before every checkpoint write; one may end the process (a worker whose driver
# died: bench/orchestrate/deathwatch.py) so that no checkpoint is begun after that.
WRITE_GUARDS: list[Callable[[], None]] = []

# Intermediate checkpoints kept: the newest and the one before, to fall back on when the
# newest does not load.
KEEP_INTERMEDIATE = 2


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read back into this trial."""


class UnreadableCheckpoint(CheckpointError):
    """A checkpoint whose files do not load or do not fit the model; found before the
    live model or method was touched, so the trial can fall back to an older one."""


def fsync_tree(folder: Path) -> None:
    """fsync every file below `folder`, then every folder bottom-up, `folder` last: what
    was written there is on the disk before anything claims it complete."""
    folders = []
    for root, _dirs, files in os.walk(folder):
        folders.append(root)
        for name in files:
            fsync_path(Path(root) / name)
    for root in reversed(folders):
        fsync_path(Path(root))


def fsync_path(path: Path) -> None:
    """fsync one file or folder by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CountedStream(Iterator):
    """``bench.data.batch_stream`` that counts the batches it has drawn, so a resumed
    trial can continue the stream where the checkpoint left it (``skip``)."""

    def __init__(self, examples: Sequence, batch_size: int, seed: int, skip: int = 0) -> None:
        self._stream = batch_stream(examples, batch_size, seed=seed)
        self.drawn = 0
        for _ in range(skip):
            next(self)

    def __next__(self) -> list:
        self.drawn += 1
        return next(self._stream)


def rng_states() -> dict[str, Any]:
    """Every global random state the loop may draw from (Python, NumPy, torch, CUDA)."""
    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.copy()), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_states(states: dict[str, Any]) -> None:
    import numpy as np

    random.setstate(states["python"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def resumable(method: Any) -> bool:
    """Whether `method` can continue from a checkpoint: it has load_state_dict(), or no
    state to load (MeZO: the weights and the step are all it needs)."""
    return hasattr(method, "load_state_dict") or not method.state_dict()


def _peft_model(method: Any) -> Any:
    return getattr(method, "peft_model", None)


def write_model(
    folder: Path, model: torch.nn.Module, tokenizer: Any, method: Any, *, merged: bool
) -> None:
    """The model as transformers writes it (and its tokenizer) into `folder`; for a peft
    method the adapter into ``adapter/``, and with `merged` the merged model too."""
    folder.mkdir(parents=True, exist_ok=True)
    peft_model = _peft_model(method)
    if peft_model is not None:
        peft_model.save_pretrained(folder / ADAPTER)
        if merged:
            copy.deepcopy(peft_model).merge_and_unload().save_pretrained(
                folder, max_shard_size=SHARD_SIZE
            )
    else:
        model.save_pretrained(folder, max_shard_size=SHARD_SIZE)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def _unreadable(path: Path, e: BaseException) -> UnreadableCheckpoint:
    first = (str(e).strip().splitlines() or [""])[0]
    return UnreadableCheckpoint(f"{path} does not load: {type(e).__name__}: {first}")


def _weight_files(folder: Path) -> list[str]:
    index = folder / "model.safetensors.index.json"
    if not index.exists():
        return ["model.safetensors"]
    try:
        return sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise _unreadable(index, e) from e


def check_model_files(folder: Path, model: torch.nn.Module, method: Any) -> None:
    """Raise UnreadableCheckpoint unless the weights `write_model` wrote into `folder` load
    and fit the live `model`: every file opens (safetensors checks that a file covers
    its header: a torn write fails here), every tensor is one of the model's with its
    shape, and none is missing. Reads headers only; touches nothing."""
    from safetensors import SafetensorError, safe_open

    if _peft_model(method) is not None:
        path = folder / ADAPTER / "adapter_model.safetensors"
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except (OSError, SafetensorError) as e:
            raise _unreadable(path, e) from e
        return
    tensors = model.state_dict(keep_vars=True)
    loaded: set[str] = set()
    for name in _weight_files(folder):
        path = folder / name
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    if key not in tensors:
                        raise UnreadableCheckpoint(f"{path}: {key} is not a tensor of the model")
                    shape = list(f.get_slice(key).get_shape())
                    if shape != list(tensors[key].shape):
                        raise UnreadableCheckpoint(
                            f"{path}: {key} has shape {shape}, the model's is "
                            f"{list(tensors[key].shape)}"
                        )
                    loaded.add(key)
        except (OSError, SafetensorError) as e:
            raise _unreadable(path, e) from e
    done = {id(tensors[k]) for k in loaded}  # tied tensors are written once
    missing = [k for k in tensors if k not in loaded and id(tensors[k]) not in done]
    if missing:
        raise UnreadableCheckpoint(f"{folder}: the checkpoint lacks {missing[:3]}")


def read_model(folder: Path, model: torch.nn.Module, method: Any) -> None:
    """Copy the weights written by `write_model` into the live `model`, one tensor at a
    time and in place, so the method's optimizer keeps pointing at the same tensors.
    Checks every file first (check_model_files), so a damaged checkpoint leaves the model
    as it was."""
    from safetensors import safe_open

    check_model_files(folder, model, method)
    peft_model = _peft_model(method)
    if peft_model is not None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        adapter = load_file(folder / ADAPTER / "adapter_model.safetensors")
        result = set_peft_model_state_dict(peft_model, adapter)
        if getattr(result, "unexpected_keys", None):
            raise CheckpointError(
                f"{folder}: adapter keys not in the model: {result.unexpected_keys[:3]}"
            )
        return
    tensors = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for name in _weight_files(folder):
            with safe_open(str(folder / name), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    tensors[key].copy_(f.get_tensor(key))


def _load_pickle(path: Path) -> Any:
    """A torch.save file of the checkpoint (a method's state may hold any picklable
    object; these files are the run's own), or UnreadableCheckpoint naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torn or missing: EOFError, UnpicklingError, RuntimeError ...
        raise _unreadable(path, e) from e


class TrialCheckpoints:
    """The checkpoints of one trial: where they go, when they are due, writing, finding
    the latest and loading it back.

    Args:
        run_dir: the run folder (checkpoints go to ``<run_dir>/checkpoints/<trial_id>``).
        trial_id: the trial's id; a checkpoint written for another id is never loaded.
        save_every: steps between intermediate checkpoints (0: none).
        final: write the trained model when training ends.
    """

    def __init__(self, run_dir: Path, trial_id: str, *, save_every: int, final: bool) -> None:
        self.run_dir = Path(run_dir)
        self.trial_id = trial_id
        self.folder = self.run_dir / CHECKPOINTS / trial_id
        self.save_every = save_every
        self.final = final
        self.write_seconds = 0.0  # writing checkpoints, off the train clock
        self.saved_steps: list[int] = []
        self.final_written = False
        self.resumed_from_step: int | None = None
        self.resumed_from: Path | None = None
        self.skipped: list[str] = []  # warnings about checkpoints that did not load

    @property
    def used(self) -> bool:
        """Whether the trial saves checkpoints or resumed from one (its record says so)."""
        return bool(self.save_every or self.final or self.resumed_from is not None)

    def due(self, step: int, total_steps: int) -> bool:
        """An intermediate checkpoint is due after `step` (the final one replaces it at
        the last step)."""
        if not self.save_every or step % self.save_every:
            return False
        return not (self.final and step == total_steps)

    def _candidates(self) -> list[tuple[int, Path]]:
        found = []
        for folder in [self.folder, *self.folder.glob("step-*")]:
            meta_file = folder / META
            if folder.name.endswith(".tmp") or not meta_file.is_file():
                continue
            try:
                meta = json.loads(meta_file.read_text())
                trial_id, step = meta.get("trial_id"), int(meta["step"])
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                self.skip(_unreadable(meta_file, e))
                continue
            if trial_id == self.trial_id:
                found.append((step, folder))
        return sorted(found, key=lambda x: (x[0], x[1] == self.folder))

    def skip(self, error: CheckpointError) -> None:
        """A checkpoint that does not load: say which folder and file, once per trial."""
        message = f"{self.trial_id}: skipping a checkpoint: {error}"
        if message not in self.skipped:
            self.skipped.append(message)
            log.warning("%s", message)

    def complete(self) -> list[Path]:
        """The complete checkpoints of this trial, newest first (the final one first on a
        tie of steps)."""
        return [folder for _, folder in reversed(self._candidates())]

    def latest(self) -> Path | None:
        """The complete checkpoint with the most steps (the final one on a tie), or None."""
        found = self._candidates()
        return found[-1][1] if found else None

    def write(
        self,
        step: int,
        model: torch.nn.Module,
        tokenizer: Any,
        method: Any,
        loop_state: dict[str, Any],
        *,
        final: bool,
    ) -> Path:
        """Write a checkpoint after `step` steps: intermediate into ``step-<step>/``
        (replacing older ones), final into the trial's folder itself."""
        for guard in WRITE_GUARDS:
            guard()
        t0 = time.perf_counter()
        meta = {
            "trial_id": self.trial_id,
            "step": step,
            "final": final,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if final:
            target = self.folder
            (target / META).unlink(missing_ok=True)  # incomplete until rewritten below
            self._write_into(target, model, tokenizer, method, loop_state, meta, merged=True)
            self._drop_intermediate()
            self.final_written = True
        else:
            target = self.folder / f"step-{step:08d}"
            tmp = target.with_name(target.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            self._write_into(tmp, model, tokenizer, method, loop_state, meta, merged=False)
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
            fsync_path(self.folder)  # the rename itself is on the disk
            self._drop_intermediate(keep=self._newest_intermediate())
        self.saved_steps.append(step)
        self.write_seconds += time.perf_counter() - t0
        log.info("%s checkpoint at step %d: %s", self.trial_id, step, target)
        return target

    def _write_into(
        self,
        folder: Path,
        model: torch.nn.Module,
        tokenizer: Any,
        method: Any,
        loop_state: dict[str, Any],
        meta: dict[str, Any],
        *,
        merged: bool,
    ) -> None:
        write_model(folder, model, tokenizer, method, merged=merged)
        torch.save(method.state_dict(), folder / METHOD_STATE)
        torch.save(loop_state, folder / LOOP_STATE)
        fsync_tree(folder)  # every file on the disk before checkpoint.json says complete
        for parent in (folder.parent, self.run_dir / CHECKPOINTS):
            fsync_path(parent)  # the folder's own entry too
        tmp_meta = folder / (META + ".tmp")
        with open(tmp_meta, "w") as f:
            f.write(json.dumps(meta, indent=1))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_meta, folder / META)  # complete from here on
        fsync_path(folder)

    def _newest_intermediate(self) -> list[Path]:
        """The KEEP_INTERMEDIATE newest complete intermediate checkpoints."""
        steps = sorted(
            p for p in self.folder.glob("step-*") if not p.name.endswith(".tmp")
        )  # zero-padded step numbers sort by step
        return steps[-KEEP_INTERMEDIATE:]

    def _drop_intermediate(self, keep: list[Path] | None = None) -> None:
        for folder in self.folder.glob("step-*"):
            if folder not in (keep or []):
                shutil.rmtree(folder, ignore_errors=True)

    def finish(self) -> None:
        """The trial ended ok: intermediate checkpoints are no longer needed."""
        self._drop_intermediate()
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()

    def load(self, folder: Path, model: torch.nn.Module, method: Any) -> dict[str, Any]:
        """Weights and method state from `folder` into the live model and method (set
        up already); returns the loop state."""
        if not resumable(method):
            raise CheckpointError(
                f"{type(method).__name__} has state but no load_state_dict(): it cannot resume"
            )
        # Every file is read (and the weights checked) before the model or the method is
        # touched: a damaged checkpoint raises UnreadableCheckpoint and changes nothing.
        state = _load_pickle(folder / METHOD_STATE)
        loop = _load_pickle(folder / LOOP_STATE)
        if not isinstance(loop, dict) or not isinstance(loop.get("step"), int):
            raise UnreadableCheckpoint(f"{folder / LOOP_STATE}: not a loop state")
        read_model(folder, model, method)  # checks every weight file before copying
        if hasattr(method, "load_state_dict"):
            method.load_state_dict(state)
        self.resumed_from_step = int(loop["step"])
        self.resumed_from = folder
        return loop

    def summary(self) -> dict[str, Any]:
        """What the trial record keeps (``checkpoint``): paths relative to the run."""

        def rel(p: Path | None) -> str | None:
            return None if p is None else str(p.relative_to(self.run_dir))

        return {
            "path": rel(self.folder) if self.final_written else None,
            "save_every": self.save_every,
            "saved_steps": list(self.saved_steps),
            "resumed_from_step": self.resumed_from_step,
            "resumed_from": rel(self.resumed_from),
            "write_seconds": self.write_seconds,
        }


def resume_step(run_dir: Path, trial_id: str) -> int | None:
    """The step a new attempt of the trial would resume from: its newest complete
    checkpoint's (read from ``checkpoint.json`` alone), or None when it has none."""
    if not (Path(run_dir) / CHECKPOINTS / trial_id).is_dir():
        return None
    found = TrialCheckpoints(run_dir, trial_id, save_every=0, final=False)._candidates()
    return found[-1][0] if found else None
