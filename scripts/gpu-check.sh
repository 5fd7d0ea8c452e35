#!/usr/bin/env bash
# The GPU checks (issue 25.4), one script for a machine with a CUDA GPU and no network:
#   pytest -m gpu (the CUDA tests, the FSDP2 path on one GPU included), the recipe on
#   CUDA in bf16-mixed and fp32, and hizfo-bench perf at SmolLM2's and a 1B shape, at
#   8 x 64 tokens and at the paper's 16 x 512 (--paper-batch; issue 33 items 4, 7), with
#   operator counts per step. Timeouts sum to under 10 minutes.
# Packages the machine lacks may come as wheels in .whl/ (installed into /tmp/site).
# Everything it measures goes to $OUT (default /tmp/gpu-check).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
log() { echo "== $*" | tee -a "$OUT/summary.log"; }
if [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
"$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 \
  || log "editable install failed (see install.log)"
nvidia-smi -L | tee -a "$OUT/summary.log"
"$PY" -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))' \
  | tee -a "$OUT/summary.log"
"$PY" -c 'import ray' 2>/dev/null && log "ray importable" || log "ray not installed: no Ray sweep here"

log "pytest -m gpu"
timeout 90 "$PY" -m pytest -q -m gpu -p no:cacheprovider --continue-on-collection-errors tests 2>&1 | tail -25 | tee -a "$OUT/summary.log"

log "recipe on CUDA (bf16-mixed default and fp32)"
timeout 90 "$PY" scripts/gpu_trials.py >"$OUT/trials.log" 2>&1; log "trials rc=$?"

log "perf smollm2-135m fp32"
timeout 90 "$PY" -m bench.cli perf --model-config smollm2-135m --repeats 5 --max-repeats 10 \
  --methods mezo,fo-adamw,hizfo --json "$OUT/perf-smollm2.json" 2>"$OUT/perf-smollm2.err" \
  | tee "$OUT/perf-smollm2.txt" | tail -40 >>"$OUT/summary.log"
log "perf llama-1b bf16"
timeout 120 "$PY" -m bench.cli perf --model-config llama-1b --dtype bfloat16 --repeats 5 \
  --max-repeats 10 --methods mezo,fo-adamw,hizfo --json "$OUT/perf-llama1b.json" \
  2>"$OUT/perf-llama1b.err" | tee "$OUT/perf-llama1b.txt" | tail -40 >>"$OUT/summary.log"
for shape in "smollm2-135m float32" "llama-1b bfloat16"; do
  set -- $shape
  log "perf $1 $2 at 16 x 512 (--paper-batch)"
  timeout 90 "$PY" -m bench.cli perf --model-config "$1" --dtype "$2" --paper-batch --repeats 3 \
    --max-repeats 6 --methods mezo,fo-adamw,hizfo --no-naive --json "$OUT/perf-$1-paper.json" \
    2>"$OUT/perf-$1-paper.err" | tee "$OUT/perf-$1-paper.txt" | tail -40 >>"$OUT/summary.log"
done
log "done"
