"""The live view of a sweep on stderr: the tally, and step, loss and ETA per running trial.

On a terminal the block redraws in place (ANSI cursor moves, at most twice a second);
anywhere else (a pipe, a CI log) it prints one line per event instead: a trial
started, finished or failed, and the tally every minute. It goes to stderr so that
``hizfo-bench run ... | tee`` keeps stdout to the final table and summary.

What a running trial is doing comes from its progress file (bench/train/
progress.py), so the view works with Ray's log forwarding off. A trial counts as
running once its worker wrote that file; until then it is queued.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any, TextIO

from tqdm import tqdm

_REDRAW_SECONDS = 0.5  # terminal: at most two redraws a second
_TALLY_SECONDS = 60.0  # pipe: the tally once a minute


def trial_line(trial_id: str, progress: dict[str, Any] | None) -> str:
    """One running trial: ``<id>  step s/S  loss L  ETA t`` (or its phase)."""
    if progress is None:
        return f"{trial_id}  queued"
    phase = progress.get("phase", "loading")
    step, total = int(progress.get("step") or 0), int(progress.get("total_steps") or 0)
    loss = progress.get("loss")
    loss_text = f"  loss {loss:.4f}" if isinstance(loss, int | float) else ""
    if phase == "training" and step:
        per_step = float(progress.get("train_seconds") or 0.0) / step
        eta = tqdm.format_interval(max(0.0, (total - step) * per_step))
        return f"{trial_id}  step {step}/{total}{loss_text}  ETA {eta}"
    if phase == "evaluating":
        return f"{trial_id}  evaluating ({step}/{total} steps{loss_text})"
    return f"{trial_id}  {phase}"


class SweepDisplay:
    """Tally and per-trial lines of one sweep; call ``update`` from the driver's wait loop."""

    def __init__(
        self,
        total: int,
        *,
        stream: TextIO | None = None,
        enabled: bool = True,
        redraw: bool = True,
    ) -> None:
        """`redraw=False` keeps to event lines even on a terminal: with Ray's log
        forwarding on (``-v``), worker lines interleave and a redrawn block would erase them."""
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.live = enabled and redraw and tty
        self.ok = self.failed = 0
        self.running: dict[str, dict[str, Any] | None] = {}
        self._seen: set[str] = set()
        self._drawn = 0  # lines of the block on screen now
        self._last_draw = 0.0
        self._last_tally = time.monotonic()
        self._t0 = time.monotonic()

    def tally(self) -> str:
        queued = self.total - self.ok - self.failed - len(self.running)
        elapsed = tqdm.format_interval(time.monotonic() - self._t0)
        return (
            f"trials: {self.ok + self.failed}/{self.total} finished ({self.ok} ok, "
            f"{self.failed} failed), {len(self.running)} running, {queued} queued, {elapsed}"
        )

    def lines(self) -> list[str]:
        return [self.tally()] + ["  " + trial_line(t, p) for t, p in sorted(self.running.items())]

    def update(self, progress: dict[str, dict[str, Any] | None]) -> None:
        """Progress of the trials not finished yet (None: not started), then redraw."""
        if not self.enabled:
            return
        self.running = {t: p for t, p in progress.items() if p is not None}
        for trial_id in sorted(set(self.running) - self._seen):
            self._seen.add(trial_id)
            if not self.live:
                self._print(f"started: {trial_id}")
        now = time.monotonic()
        if self.live and now - self._last_draw >= _REDRAW_SECONDS:
            self._draw()
        elif not self.live and now - self._last_tally >= _TALLY_SECONDS:
            self._last_tally = now
            self._print(self.tally())

    def finished(self, trial_id: str, record: dict[str, Any]) -> None:
        """A result arrived: count it, print it above the block."""
        self.running.pop(trial_id, None)
        if record.get("status") == "ok":
            self.ok += 1
            score = record.get("score")
            text = f"done: {trial_id}" + (f"  score {score:.4f}" if score is not None else "")
        else:
            self.failed += 1
            text = f"failed: {trial_id}: {record.get('error')}"
        if self.enabled:
            self._print(text)

    def close(self) -> None:
        """Leave the final tally on screen."""
        if not self.enabled:
            return
        self._print(self.tally(), redraw=False)

    # ---- drawing ------------------------------------------------------------------

    def _print(self, text: str, redraw: bool = True) -> None:
        """A line above the block (which is redrawn below it on a terminal)."""
        if self.live:
            self._clear()
        print(text, file=self.stream, flush=True)
        if self.live and redraw:
            self._draw()

    def _clear(self) -> None:
        if self._drawn:
            # Up to the first line of the block, then erase to the end of the screen.
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _draw(self) -> None:
        self._clear()
        width = max(20, shutil.get_terminal_size().columns - 1)
        lines = [line[:width] for line in self.lines()]  # no wrap: keeps the count right
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        self._drawn = len(lines)
        self._last_draw = time.monotonic()
