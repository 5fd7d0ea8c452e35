"""What a resume finds in a run dir: trials of this suite's cells run with other settings.

A trial id is a hash of the whole spec, so a suite edited between two runs into the same
``--out`` does not resume its trials: it adds a second set beside them, which reports show
as separate rows. `settings_note` says so in one line before anything runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench import store
from bench.format import flatten
from bench.spec import TrialSpec


def settings_note(specs: list[TrialSpec], run_dir: Path) -> str | None:
    """One line when `run_dir` holds final trials of the same (method, task, model, seed)
    as `specs` whose settings differ (the first differing key, old and new), else None.
    Settings a tuning phase chose (the trial's ``tuning_point``) are not a difference."""
    by_cell = {(s.method, s.task, s.model, s.seed): s for s in specs}
    ids = {s.trial_id for s in specs}
    differing: list[tuple[str, str]] = []
    for record in store.read_trials(run_dir) if Path(run_dir).is_dir() else []:
        config = record.config
        spec = by_cell.get((record.method, record.task, record.model, record.seed))
        if spec is None or record.trial_id in ids or config.get("phase", "final") != "final":
            continue
        try:
            old = TrialSpec.from_dict(config)
        except (KeyError, TypeError, ValueError):  # a config this code cannot rebuild
            continue
        change = _first_change(old, spec)
        if change:
            differing.append((record.trial_id, change))
    if not differing:
        return None
    n = len(differing)
    trial_id, change = differing[0]
    return (
        f"warning: {run_dir} holds {n} trial{'s' if n > 1 else ''} with other settings than "
        f"this suite's ({change}; e.g. {trial_id}): they are kept, and this run adds its own "
        "beside them (reports show each setting as its own row)"
    )


def _first_change(old: TrialSpec, new: TrialSpec) -> str | None:
    """``key: A there, B now`` for the first setting that differs, ignoring tuned keys."""
    tuned = {f"method_config.{k}" for k in old.tuning_point} | {"tuning_point", "phase"}
    # Compared as the trial file holds them: a tuple (AdamW's betas) read back is a list.
    a, b = (flatten(json.loads(json.dumps(s._id_payload())), keep_empty=True) for s in (old, new))
    for key in sorted(a.keys() | b.keys()):
        if any(key == t or key.startswith(f"{t}.") for t in tuned):
            continue
        if a.get(key, "unset") != b.get(key, "unset"):
            return f"{key}: {a.get(key, 'unset')} there, {b.get(key, 'unset')} now"
    return None
