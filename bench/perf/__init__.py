"""`hizfo-bench perf`: step time and peak memory of each method next to their floors.

A ZO step cannot beat two forward passes and ZO memory cannot beat inference memory, so
this measures, in one process, on one model and one batch:

- references (references.py): a no-grad forward (inference), a forward + backward, and
  a naive MeZO step as MeZO's paper code writes it, for comparison only;
- every method row (methods.py), through the registry and the real ``setup``/``step``,
  in every variant its class declares (``perf_variants``), with the floors its ratios
  need (a no-grad forward; for Hi-ZFO also its partial forward + backward) timed in the
  same rounds as its steps;
- ratios (ratios.py) per round, A B A B ... (timing.py), each with a 95% interval and
  the thread count it was measured at; targets are ratios to a floor only, and a ratio
  whose interval is wider than +-5% gets no met/missed verdict; which ratios a method's
  rows get, and their targets, its class declares (MethodTraits.perf_ratios);
- operator calls (ops.py) of one step and of its floor's passes, counted by a torch
  dispatch mode: exact and independent of load, on CPU and GPU alike.

The model is a model source (bench.models) or a paper-sized shape built with random
weights on the device (``--model-config``, bench.model_configs; reduced on CPU,
workload.py). rng.py measures why ZO ratios differ between boxes (the z fill against
matmul speed). output.py writes perf.json, trial records and the tables.
docs/performance.md describes the shape and the numbers measured so far.
"""

from bench.perf.output import render, trial_record, write_outputs
from bench.perf.ratios import (
    REFERENCE_RATIOS,
    MethodRatio,
    check_targets,
    compute_ratios,
    method_ratios,
    ratios_of,
)
from bench.perf.references import naive_mezo_step
from bench.perf.run import PERF_SCHEMA, run_perf
from bench.perf.settings import PerfSettings

__all__ = [
    "PERF_SCHEMA",
    "REFERENCE_RATIOS",
    "MethodRatio",
    "PerfSettings",
    "check_targets",
    "compute_ratios",
    "method_ratios",
    "naive_mezo_step",
    "ratios_of",
    "render",
    "run_perf",
    "trial_record",
    "write_outputs",
]
