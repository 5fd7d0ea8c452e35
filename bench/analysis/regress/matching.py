"""Which reference trial a current trial is compared with, and on which platform."""

from __future__ import annotations

from pathlib import Path

from bench.format import flatten
from bench.measure.environment import fingerprint_key
from bench.record import TrialRecord

KEY_FIELDS = ("method", "task", "model", "seed")
UNKNOWN = "unknown"  # machine key of a record without a fingerprint

# ---- matching ------------------------------------------------------------------------


def trial_key(record: TrialRecord, match: str = "key") -> tuple:
    if match == "id":
        return (record.trial_id,)
    return tuple(getattr(record, k) for k in KEY_FIELDS)


def _key_text(key: tuple) -> str:
    if len(key) == 1:
        return str(key[0])
    method, task, model, seed = key
    return f"{method}/{task}/{Path(str(model)).name or model}/s{seed}"


def config_differences(ref: TrialRecord, cur: TrialRecord) -> list[str]:
    a, b = flatten(ref.config), flatten(cur.config)
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def _index(
    records: list[TrialRecord], match: str, side: str, warnings: list[str]
) -> dict[tuple, list[TrialRecord]]:
    index: dict[tuple, list[TrialRecord]] = {}
    for r in records:
        index.setdefault(trial_key(r, match), []).append(r)
    for key, rs in index.items():
        if len(rs) > 1:
            warnings.append(
                f"{side} has {len(rs)} trials for {_key_text(key)} (configs changed within "
                "one run dir?); using the one with the other side's trial id, else the newest"
            )
    return index


def _pick(candidates: list[TrialRecord], other: list[TrialRecord]) -> TrialRecord:
    ids = {r.trial_id for r in other}
    same = [r for r in candidates if r.trial_id in ids]
    pool = same or candidates
    return max(pool, key=lambda r: str(r.started_at or ""))


# ---- platforms -----------------------------------------------------------------------


def record_machine_key(record: TrialRecord) -> str:
    """The fingerprint key a record ran on: its ``environment.machine_key``, else one
    computed from ``environment.machine`` (records written before the key existed), else
    "unknown" (no fingerprint at all: never matches a history)."""
    env = record.environment
    key = env.get("machine_key")
    if isinstance(key, str) and key and key != UNKNOWN:
        return key
    fp = env.get("machine")
    if isinstance(fp, dict) and fp.get("cpu_model") is not None and "gpus" in fp:
        return fingerprint_key(fp)
    return UNKNOWN


def machine_key(record: TrialRecord) -> str:
    """The machine fingerprint key a record ran on ("unknown" without one)."""
    return record_machine_key(record)


def same_platform(ref: TrialRecord, cur: TrialRecord) -> bool:
    """Whether a fixed-seed run repeats bit for bit: same machine fingerprint, torch
    version and intra-op thread count (the thread count sets float reduction order)."""
    key = machine_key(ref)
    if key == "unknown" or key != machine_key(cur):
        return False
    a, b = ref.environment, cur.environment
    torch_a = (a.get("packages") or {}).get("torch")
    torch_b = (b.get("packages") or {}).get("torch")
    return torch_a == torch_b and a.get("torch_threads") == b.get("torch_threads")
