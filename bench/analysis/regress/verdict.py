"""The verdict over a whole run: every trial matched, checked and summed up."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.analysis.regress.checks import (
    Tolerances,
    TrialComparison,
    check_group_scores,
    compare_trial,
)
from bench.analysis.regress.inputs import UnusableInput
from bench.analysis.regress.matching import KEY_FIELDS, _index, _key_text, _pick, machine_key
from bench.record import TrialRecord


@dataclass
class Verdict:
    reference: str
    current: str
    match: str
    tolerances: Tolerances
    trials: list[TrialComparison]
    warnings: list[str]
    history: str | None = None  # where the time baselines came from, if anywhere

    @property
    def regressions(self) -> list[TrialComparison]:
        return [t for t in self.trials if t.regressed]

    @property
    def passed(self) -> bool:
        return not self.regressions

    def to_dict(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for t in self.trials:
            counts[t.outcome] = counts.get(t.outcome, 0) + 1
        return {
            "verdict": "pass" if self.passed else "regression",
            "reference": self.reference,
            "current": self.current,
            "history": self.history,
            "match_by": "trial_id" if self.match == "id" else "+".join(KEY_FIELDS),
            "tolerances": asdict(self.tolerances),
            "counts": counts,
            "warnings": self.warnings,
            "trials": [asdict(t) for t in self.trials],
        }


def compare(
    reference: list[TrialRecord],
    current: list[TrialRecord],
    tol: Tolerances | None = None,
    *,
    match: str = "key",
    reference_name: str = "reference",
    current_name: str = "current",
    baseline: dict[tuple, list[TrialRecord]] | None = None,
    history_name: str | None = None,
) -> Verdict:
    """Compare every reference trial with its match in `current` (see the module doc).

    ``baseline``: per trial key, earlier runs' records of the current run's machine
    (history.baselines); absolute times are judged only against these.
    """
    if match not in ("key", "id"):
        raise ValueError(f"match must be 'key' or 'id', not {match!r}")
    tol = tol or Tolerances()
    warnings: list[str] = []
    ref_index = _index(reference, match, "reference", warnings)
    cur_index = _index(current, match, "current", warnings)
    if not set(ref_index) & set(cur_index):
        how = "trial id" if match == "id" else "(method, task, model, seed)"
        raise UnusableInput(
            f"no trial of {current_name} matches one of {reference_name} by {how}; "
            "is it a run of the same suite?"
        )
    baseline = baseline or {}
    trials = []
    for key in sorted(ref_index, key=str):
        text = _key_text(key)
        if key not in cur_index:
            r = _pick(ref_index[key], [])
            trials.append(
                TrialComparison(text, r.trial_id, None, "missing", ["missing from current"])
            )
            continue
        ref = _pick(ref_index[key], cur_index[key])
        cur = _pick(cur_index[key], [ref])
        trials.append(compare_trial(text, ref, cur, tol, baseline.get(key)))
    for key in sorted(set(cur_index) - set(ref_index), key=str):
        cur = _pick(cur_index[key], [])
        trials.append(TrialComparison(_key_text(key), None, cur.trial_id, "new"))
    if match == "key":
        trials += _group_comparisons(reference, current, tol)

    changed = [t for t in trials if t.config_changes]
    if changed:
        settings = sorted({c.split(":")[0] for t in changed for c in t.config_changes})
        warnings.append(
            f"{len(changed)} matched trial(s) ran with a different config than the reference "
            f"({', '.join(settings)}); they are compared anyway"
        )
    warnings += _machine_warnings(reference, current, baseline, history_name, tol)
    numerics = [t.key for t in trials for c in t.checks if c.status == "changed"]
    if numerics:
        warnings.append(
            f"losses changed on the same platform ({', '.join(numerics)}): the numerics "
            "changed; refresh the reference if that was meant"
        )
    return Verdict(reference_name, current_name, match, tol, trials, warnings, history_name)


def _group_comparisons(
    reference: list[TrialRecord], current: list[TrialRecord], tol: Tolerances
) -> list[TrialComparison]:
    def groups(records: list[TrialRecord]) -> dict[tuple, list[TrialRecord]]:
        out: dict[tuple, list[TrialRecord]] = {}
        for r in records:
            out.setdefault((r.method, r.task, r.model), []).append(r)
        return out

    ref_groups, cur_groups = groups(reference), groups(current)
    out = []
    for key in sorted(set(ref_groups) & set(cur_groups), key=str):
        check = check_group_scores("", ref_groups[key], cur_groups[key], tol)
        if check is None:
            continue
        method, task, model = key
        text = f"{method}/{task}/{Path(str(model)).name or model}/mean"
        t = TrialComparison(text, None, None, "ok", checks=[check])
        if check.status == "regression":
            t.outcome, t.reasons = "regression", [check.sentence()]
        out.append(t)
    return out


def _machine_warnings(
    reference: list[TrialRecord],
    current: list[TrialRecord],
    baseline: dict[tuple, list[TrialRecord]],
    history_name: str | None,
    tol: Tolerances,
) -> list[str]:
    def describe(records: list[TrialRecord]) -> str:
        keys = sorted({machine_key(r) for r in records})
        cpus = sorted({str((r.environment.get("machine") or {}).get("cpu_model")) for r in records})
        return f"{', '.join(keys)} ({'; '.join(cpus)})"

    out = []
    ref_keys = {machine_key(r) for r in reference}
    cur_keys = {machine_key(r) for r in current}
    if ref_keys != cur_keys or "unknown" in ref_keys:
        out.append(
            f"reference ran on machine {describe(reference)}, current on {describe(current)}: "
            "losses are held to the cross-platform tolerance; absolute times are compared "
            "only with the history of the current machine"
        )
    if tol.check_time and not baseline:
        where = f"in {history_name}" if history_name else "(no --history given)"
        out.append(
            f"no earlier run of machine {', '.join(sorted(cur_keys))} {where}: step times "
            "have no baseline (seed it: hizfo-bench history add RUN_DIR)"
        )
    return out
