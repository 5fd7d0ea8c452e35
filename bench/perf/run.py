"""The whole benchmark: references and every method row on one model, then ratios."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch

from bench.measure.environment import environment, machine
from bench.measure.memory import release_freed_memory
from bench.perf.methods import measure_method, method_variants
from bench.perf.output import trial_record
from bench.perf.ratios import check_targets, compute_ratios, floors_needed
from bench.perf.references import measure_references
from bench.perf.settings import PerfSettings
from bench.perf.workload import load_model, make_batch, model_label

PERF_SCHEMA = 2  # 2: interleaved rounds, ratio intervals, threads, model_config


def measure_model(
    settings: PerfSettings, device: torch.device, log: Callable[[str], None]
) -> dict[str, Any]:
    """References and every method row on the model of `settings`."""
    label = model_label(settings, device)
    load_before = machine()["loadavg"]
    model = load_model(settings, device)
    batch = make_batch(model, settings.batch_size, settings.seq_len, device)
    parameters = sum(p.numel() for p in model.parameters())
    log(f"{label}: {parameters / 1e6:.1f}M parameters, references ...")
    refs = measure_references(model, batch, settings, device)
    del model, batch
    release_freed_memory()

    methods: dict[str, Any] = {}
    for row, name, overrides in method_variants(settings):
        log(f"{label}: {row} ...")
        try:
            methods[row] = {"status": "ok", "method": name}
            methods[row].update(
                measure_method(name, overrides, settings, device, floors=floors_needed(name))
            )
        except Exception as e:  # one failing method must not hide the others' numbers
            methods[row] = {"status": "failed", "method": name, "error": f"{type(e).__name__}: {e}"}
        release_freed_memory()
    ratios, intervals, definitions = compute_ratios(refs, methods)
    return {
        "model": label,
        "parameters": parameters,
        "loadavg_before": load_before,
        "loadavg_after": machine()["loadavg"],
        "threads": torch.get_num_threads(),
        "references": refs,
        "methods": methods,
        "ratios": ratios,
        "intervals": intervals,
        "targets": check_targets(ratios, intervals, definitions, device),
    }


def run_perf(
    settings: PerfSettings, *, log: Callable[[str], None] = lambda s: None
) -> dict[str, Any]:
    """Measure the model; returns the perf.json summary (trial records under "trials")."""
    device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        env = environment(device)
        env["machine"] = {**env["machine"], **machine()}  # fingerprint + load
        models = [measure_model(settings, device, log)]
    finally:
        torch.set_num_threads(threads)
    trials = []
    for m in models:
        for row, result in m["methods"].items():
            trials.append(trial_record(row, m["model"], result, m["ratios"], settings, env))
    return {
        "schema": PERF_SCHEMA,
        "settings": asdict(settings),
        "device": str(device),
        "environment": env,
        "ratios": models[0]["ratios"],
        "intervals": models[0]["intervals"],
        "targets": models[0]["targets"],
        "models": models,
        "trials": trials,
    }
