"""The live view of a sweep on stderr: the tally with the sweep's phase and ETA, and step,
loss and ETA per running trial.

On a terminal the block redraws in place (ANSI cursor moves, at most twice a second);
anywhere else (a pipe, a CI log) it prints one line per event instead: a trial
started, finished or failed, and the tally every minute. It goes to stderr so that
``hizfo-bench run ... | tee`` keeps stdout to the final table and summary.

What a running trial is doing comes from its progress file (bench/train/
progress.py), so the view works with Ray's log forwarding off. A trial counts as
running once its worker wrote that file; until then it is queued. A running trial
without progress for a quarter of its stall limit (bench/orchestrate/stall.py) is marked
``STALLED: no progress for t (stopped at T)`` and counted in the tally, before the sweep
stops it at T; on a pipe the first mark is one line.

The tally names the phase the sweep runs (``tuning trials``, ``target setting trials``
or ``final trials``, from the trial specs' ``phase``) and a rough ETA for the whole sweep (``sweep_eta``):
the typical trial's wall time (the mean of the finished ones, or before any finished,
of the running ones' elapsed time plus their ETA) for every queued trial, the rest of it
for every running one, spread over the sweep's slots. A running trial's ETA counts what
follows training (sharpness, scoring): its train-clock ETA plus the mean time the
finished trials spent after training, or, once it measures or scores, what is left of
that mean. Trials differ in length, so it firms up as trials finish; the ETA of a tuning
stage covers that stage.

After training a trial line says what the trial does: ``trained`` (memory, checkpoint),
``measuring sharpness``, ``scoring the test set``. On a terminal every line fits its
width: a trial id is shortened (head, ellipsis, digest) and the loss, the tally's
ok/failed split and elapsed time are dropped before a step count or an ETA is cut.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from tqdm import tqdm

from bench.orchestrate.stall import marked

_REDRAW_SECONDS = 0.5  # terminal: at most two redraws a second
_TALLY_SECONDS = 60.0  # pipe: the tally once a minute


# TrialSpec.phase -> the word the display shows.
PHASE_LABELS = {"tune": "tuning", "target": "target setting", "final": "final"}


def phase_label(phases: Iterable[str]) -> str | None:
    """What the display calls a sweep of trials of these phases (None for none)."""
    found = sorted(
        set(phases), key=lambda p: list(PHASE_LABELS).index(p) if p in PHASE_LABELS else 9
    )
    return " + ".join(PHASE_LABELS.get(p, p) for p in found) or None


def _train_eta(progress: dict[str, Any]) -> float | None:
    """Train-clock seconds left for a training trial, from its steps so far."""
    step, total = int(progress.get("step") or 0), int(progress.get("total_steps") or 0)
    if progress.get("phase") != "training" or not step:
        return None
    return max(0.0, (total - step) * float(progress.get("train_seconds") or 0.0) / step)


def sweep_eta(
    running: list[tuple[float, float | None]],
    queued: int,
    durations: list[float],
    slots: int,
) -> float | None:
    """Rough seconds until the sweep ends, or None before anything can be told.

    `running` holds (seconds since the trial started, its train-clock ETA or None) per
    running trial; `durations` the wall seconds of the trials finished so far; `slots`
    how many trials run at a time. A typical trial lasts the mean finished duration (or,
    before any finished, the mean of elapsed + ETA of the running ones); each running
    trial has the rest of that left (at least its own ETA), each queued trial all of it,
    and the work is spread over the slots (never less than the longest running trial's
    remainder)."""
    if durations:
        typical = sum(durations) / len(durations)
    else:
        projected = [elapsed + eta for elapsed, eta in running if eta is not None]
        if not projected:
            return None
        typical = sum(projected) / len(projected)
    left = []
    for elapsed, eta in running:
        rest = typical - elapsed
        left.append(max(rest, eta if eta is not None else 0.0, 0.0))
    work = sum(left) + queued * typical
    return max(work / max(1, slots), max(left, default=0.0))


# A trial's phase after training (bench/train/progress.py) -> what the display says.
AFTER_TRAINING = {
    "evaluating": "trained",  # training ended: memory, checkpoint
    "sharpness": "measuring sharpness",
    "scoring": "scoring the test set",
}
_ID_LEAST = 16  # a trial id is never shortened below this many characters


def shorten(text: str, width: int) -> str:
    """`text` in at most `width` characters: its head, an ellipsis, its last 9 (a trial
    id's digest)."""
    if len(text) <= width:
        return text
    tail = min(9, max(0, width - 4))
    return text[: max(1, width - tail - 1)] + "\u2026" + (text[-tail:] if tail else "")


def fit(head: str, variants: list[list[str]], width: int | None) -> str:
    """`head` (a trial id) and the first of `variants` (its fields, fullest first) that
    fits in `width` with the head shortened to no less than _ID_LEAST characters: the
    numbers stay whole, the id and the less needed fields give way. No width: all."""
    if width is None:
        return head + "".join(variants[0])
    for parts in variants:
        rest = "".join(parts)
        room = width - len(rest)
        if room >= min(len(head), _ID_LEAST):
            return shorten(head, room) + rest
    return (shorten(head, _ID_LEAST) + "".join(variants[-1]))[:width]


def trial_line(
    trial_id: str,
    progress: dict[str, Any] | None,
    width: int | None = None,
    *,
    eta: float | None = None,
) -> str:
    """One running trial: ``<id>  step s/S  loss L  ETA t`` (or its phase). `eta`: the
    seconds left to the trial's end, measuring and scoring included (``Display``'s
    ``trial_eta``); without it, a training trial shows its train-clock ETA. With `width`,
    at most that many characters: the id is shortened and the loss dropped before the
    step and ETA are cut."""
    if progress is None:
        return fit(trial_id, [["  queued"]], width)
    phase = progress.get("phase", "loading")
    step, total = int(progress.get("step") or 0), int(progress.get("total_steps") or 0)
    loss = progress.get("loss")
    loss_text = f"  loss {loss:.4f}" if isinstance(loss, int | float) else ""
    stall, stall_short = stall_mark(progress), stall_mark(progress, short=True)
    eta_text = f"  ETA {tqdm.format_interval(eta)}" if eta is not None else ""
    if phase == "training" and step:
        left = eta if eta is not None else _train_eta(progress) or 0.0
        fields = [f"  step {step}/{total}", loss_text, f"  ETA {tqdm.format_interval(left)}"]
        short = [fields[0], fields[2]]
    elif phase in AFTER_TRAINING:
        words = AFTER_TRAINING[phase]
        fields = [f"  {words} ({step}/{total} steps{loss_text})", eta_text]
        short = [f"  {words} ({step}/{total})", eta_text]
    else:
        fields = short = [f"  {phase}"]
    return fit(
        trial_id,
        [[*fields, stall], [*short, stall], [*short, stall_short]],
        width,
    )


def stall_mark(progress: dict[str, Any] | None, *, short: bool = False) -> str:
    """``  STALLED: no progress for t (stopped at T)`` for a trial stall.marked, else ''
    (`short`: ``  STALLED t/T``, for a narrow terminal)."""
    if not marked(progress):
        return ""
    assert progress is not None
    silent = tqdm.format_interval(float(progress["silent_seconds"]))
    limit = tqdm.format_interval(float(progress["stall_limit"]))
    if short:
        return f"  STALLED {silent}/{limit}"
    return f"  STALLED: no progress for {silent} (stopped at {limit})"


class SweepDisplay:
    """Tally and per-trial lines of one sweep; call ``update`` from the driver's wait loop."""

    def __init__(
        self,
        total: int,
        *,
        stream: TextIO | None = None,
        enabled: bool = True,
        redraw: bool = True,
        phase: str | None = None,
        slots: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`redraw=False` keeps to event lines even on a terminal: with Ray's log
        forwarding on (``-v``), worker lines interleave and a redrawn block would erase them.
        `phase` labels the tally (``phase_label``); `slots` is how many trials run at a
        time (default: the most seen running at once), for the sweep's ETA."""
        self.total = total
        self.phase = phase
        self.slots = slots
        self._clock = clock
        self._started: dict[str, float] = {}  # trial id -> when it was first seen running
        self._durations: list[float] = []  # wall seconds of the trials finished here
        # Measuring and scoring after training: when each running trial entered it, and
        # how long it took the trials that finished (the ETAs count it from then on).
        self._after_started: dict[str, float] = {}
        self._after_durations: list[float] = []
        self._most_running = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.live = enabled and redraw and tty
        self.ok = self.failed = 0
        self.running: dict[str, dict[str, Any] | None] = {}
        self._seen: set[str] = set()
        self._stalled: set[str] = set()  # trials marked stalled so far
        self._drawn = 0  # lines of the block on screen now
        self._last_draw = 0.0
        self._last_tally = clock()
        self._t0 = clock()

    def trial_eta(self, trial_id: str) -> float | None:
        """Seconds left to a running trial's end: its train-clock ETA plus the measuring
        and scoring the finished trials took after training (mean), or, once it is
        measuring or scoring, what is left of that mean; None before it can tell."""
        progress = self.running.get(trial_id)
        if not progress:
            return None
        after = (
            sum(self._after_durations) / len(self._after_durations)
            if self._after_durations
            else None
        )
        if trial_id in self._after_started:
            if after is None:
                return None
            return max(0.0, after - (self._clock() - self._after_started[trial_id]))
        train = _train_eta(progress)
        if train is None:
            return None
        return train + (after or 0.0)

    def eta(self) -> float | None:
        """Rough seconds until the sweep ends (``sweep_eta``), None before it can tell."""
        now = self._clock()
        queued = self.total - self.ok - self.failed - len(self.running)
        running = [(now - self._started.get(t, now), self.trial_eta(t)) for t in self.running]
        slots = self.slots or max(1, self._most_running)
        return sweep_eta(running, max(0, queued), self._durations, slots)

    def tally(self, width: int | None = None) -> str:
        """``<phase> trials: n/N finished (ok, failed), running, queued, elapsed, sweep
        ETA``. With `width`, at most that many characters: the ok/failed split, then the
        elapsed time go before any number is cut."""
        queued = self.total - self.ok - self.failed - len(self.running)
        elapsed = tqdm.format_interval(self._clock() - self._t0)
        stalled = sum(marked(p) for p in self.running.values())
        head = f"{self.phase} trials: " if self.phase else "trials: "
        counts = f"{self.ok + self.failed}/{self.total} finished"
        split = f" ({self.ok} ok, {self.failed} failed)"
        rest = (
            f", {len(self.running)} running"
            + (f" ({stalled} stalled)" if stalled else "")
            + f", {queued} queued"
        )
        eta_text = ""
        if self.ok + self.failed < self.total:
            eta = self.eta()
            eta_text = f", sweep ETA ~{tqdm.format_interval(eta)}" if eta is not None else ""
        eta_short = eta_text.replace("sweep ETA", "ETA")
        plain = f", {len(self.running)} running, {queued} queued"  # stalls: on their lines
        variants = [
            [counts, split, rest, f", {elapsed}", eta_text],
            [counts, rest, f", {elapsed}", eta_text],
            [counts, rest, eta_text],
            [counts, rest, eta_short],
            [counts, plain, eta_short],
            [f"{self.ok + self.failed}/{self.total}", plain, eta_short],
        ]
        if width is None:
            return head + "".join(variants[0])
        for parts in variants:
            text = head + "".join(parts)
            if len(text) <= width:
                return text
        return text[:width]

    def lines(self, width: int | None = None) -> list[str]:
        """The tally and one line per running trial; with `width`, none longer."""
        inner = None if width is None else width - 2
        return [self.tally(width)] + [
            "  " + trial_line(t, p, inner, eta=self.trial_eta(t))
            for t, p in sorted(self.running.items())
        ]

    def update(self, progress: dict[str, dict[str, Any] | None]) -> None:
        """Progress of the trials not finished yet (None: not started), then redraw."""
        if not self.enabled:
            return
        self.running = {t: p for t, p in progress.items() if p is not None}
        self._most_running = max(self._most_running, len(self.running))
        now = self._clock()
        for trial_id in sorted(set(self.running) - self._seen):
            self._seen.add(trial_id)
            self._started[trial_id] = now
            if not self.live:
                self._print(f"started: {trial_id}")
        for trial_id, progress in sorted(self.running.items()):
            if progress.get("phase") in AFTER_TRAINING:
                self._after_started.setdefault(trial_id, now)
            if marked(progress) and trial_id not in self._stalled:
                self._stalled.add(trial_id)  # once per trial on a pipe
                if not self.live:
                    self._print(f"stalled: {trial_line(trial_id, progress)}")
        if self.live and now - self._last_draw >= _REDRAW_SECONDS:
            self._draw()
        elif not self.live and now - self._last_tally >= _TALLY_SECONDS:
            self._last_tally = now
            self._print(self.tally())

    def finished(self, trial_id: str, record: dict[str, Any]) -> None:
        """A result arrived: count it, print it above the block."""
        self.running.pop(trial_id, None)
        if trial_id in self._started:
            self._durations.append(self._clock() - self._started.pop(trial_id))
        if trial_id in self._after_started and record.get("status") == "ok":
            self._after_durations.append(self._clock() - self._after_started[trial_id])
        self._after_started.pop(trial_id, None)
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
        # Fitted, not cut (the numbers stay whole); no wrap: keeps the count right.
        lines = [line[:width] for line in self.lines(width)]
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        self._drawn = len(lines)
        self._last_draw = self._clock()
