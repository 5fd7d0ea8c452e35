"""Regression checks: compare a run with a reference run and with this machine's history.

Each figure is judged against the evidence that fits it (docs/reports.md, "What is a
regression"):

- machine-independent figures, against the committed reference, tightly: forward and
  backward passes per step (exact), the perf ratios measured in one process (MeZO step /
  two forwards, MeZO peak / inference peak, Hi-ZFO step / AdamW step: a relative
  tolerance covering their spread over repeats), and the training and dev losses of a
  fixed-seed CPU run. Those are bit-reproducible on one platform (same machine key,
  torch version and thread count), so there the tolerance is a rounding-level 1e-4
  relative; across platforms kernels round differently and the loss may drift, so a
  loose factor applies (1.05 x reference + 0.02).
- scores, against the reference, with the noise of what is compared: a single seed's
  difference against both trials' lm-eval stderr (sqrt(se_ref^2 + se_cur^2)); the mean
  over seeds against the standard errors of both means.
- absolute times, only against earlier runs of the same machine fingerprint (the
  history, bench/analysis/history.py), with a statistical decision on per-step times
  (bench/analysis/timing.py). Without such runs the verdict is "no baseline", never a
  guess from another machine.
- peak memory, against the reference when measured the same way: factor + slack.

Trials are matched by (method, task, model, seed) by default, not by trial id: a trial
id ends in a hash of the whole config, so any change to a suite would make every trial
"missing". Matched trials whose configs differ are compared anyway, with a warning that
names the differing settings. ``match="id"`` asks for exact trial ids instead.

Modules, by concern: inputs (reading runs), matching (pairing trials, platforms),
checks (one figure of one pair), verdict (the whole run). The table is drawn by
bench/report/compare.py.
"""

from bench.analysis.regress.checks import Check, Tolerances, TrialComparison
from bench.analysis.regress.inputs import UnusableInput, load_records
from bench.analysis.regress.matching import UNKNOWN, record_machine_key, trial_key
from bench.analysis.regress.verdict import Verdict, compare

__all__ = [
    "UNKNOWN",
    "Check",
    "Tolerances",
    "TrialComparison",
    "UnusableInput",
    "Verdict",
    "compare",
    "load_records",
    "record_machine_key",
    "trial_key",
]
