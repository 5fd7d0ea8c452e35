"""GPU checks of single trials (scripts/gpu-check.sh): the recipe on CUDA in its default
precision (bf16-mixed on a GPU) and in fp32, for fo-adamw, mezo and hizfo on the tiny
model; a summary of each record (losses, peak memory and how it was measured) to OUT."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from bench.spec import DevConfig, EvalConfig, TrainConfig, TrialSpec
from bench.train.recipe import run_trial

OUT = Path(os.environ.get("OUT", "/tmp/gpu-check"))
CONFIGS = {
    "fo-adamw": {"lr": 1e-3},
    "mezo": {"lr": 1e-4, "eps": 1e-3},
    "hizfo": {"fo_lr": 1e-3, "zo_lr": 1e-4, "profile_batches": 1},
}


def spec(method: str, precision: str | None = None) -> TrialSpec:
    return TrialSpec(
        method=method,
        task="math-mini",
        model="tiny",
        seed=0,
        method_config=CONFIGS[method],
        train=TrainConfig(
            steps=8,
            batch_size=4,
            max_length=96,
            train_examples=32,
            log_every=2,
            precision=precision,
        ),
        eval=EvalConfig(limit=4, batch_size=4, max_gen_toks=8),
        dev=DevConfig(eval_every=4, batches=1),
    )


def summary(record: dict) -> dict:
    keys = ("status", "error", "train_seconds", "peak_memory_bytes", "passes", "placement")
    out = {k: record.get(k) for k in keys}
    out["losses"] = [p["loss"] for p in record.get("curve") or []]
    out["memory_kind"] = (record.get("memory") or {}).get("kind")
    out["precision"] = (record.get("model_info") or {}).get("precision")
    out["device"] = (record.get("environment") or {}).get("device")
    return out


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for method in CONFIGS:
        for precision in (None, "fp32"):
            t0 = time.perf_counter()
            record = run_trial(spec(method, precision))
            results[f"{method}/{precision or 'default'}"] = {
                **summary(record),
                "wall": time.perf_counter() - t0,
            }
            print(method, precision, record["status"], record.get("error"), flush=True)
    (OUT / "gpu_trials.json").write_text(json.dumps(results, indent=1, default=str))
    return 0 if all(r["status"] == "ok" for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
