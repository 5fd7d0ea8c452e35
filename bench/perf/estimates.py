"""Estimates, not measurements: what fits on one GPU, and the GPU-hours of a suite.

Memory model (bytes per parameter of what a method holds through a step, plus
activations; bench/measure/memory.py measures the same parts on a real run):

- weights: 4 bytes in fp32 and in bf16-mixed (fp32 master weights, bf16 autocast
  compute), 2 in pure bf16;
- for the fraction f of parameters a method trains first-order (what its class declares,
  MethodTraits.fo_fraction: fo-adamw 1, Hi-ZFO its config's rho, MeZO, LoRA's base
  weights and the zero-shot model 0, the default): a gradient and AdamW's two moments,
  each the size of the weights: 3 x weights x f (so fo-adamw in fp32 or bf16-mixed is 16
  bytes per parameter, the usual figure);
- activations a backward keeps (methods with a backward): per layer and token, 34 x
  hidden bytes at 16 bits (Korthikanti et al. 2022, with SDPA attention, no
  recomputation; twice that in fp32), plus fp32 logits and their gradient (8 x vocab
  bytes per token); a forward without backward (ZO) holds one layer's and the logits
  (4 x vocab bytes per token);
- a GPU is usable to 90% (CUDA context, allocator slack).

GPU-hours (per trial, summed over a suite's final trials; its tuning trials, before any
edge extension, on a line of their own):
training steps x the method's step cost in forwards (MethodTraits.step_cost: forward + 2
x backward) x 2 x parameters x tokens per step (batch x max_length: an upper bound, real
examples are shorter) at an assumed fraction MFU of the GPU's bf16 peak; dev loss points
(forwards); sharpness (2 x directions + 1 forwards and at most hessian_iters
Hessian-vector products of about 5 forwards each, on its examples); test generation, memory-bound:
documents / eval batch x max_gen_toks decoding steps, each reading the weights once at a
fraction of the memory bandwidth. Every pass or decoding step takes at least
LAYER_SECONDS per layer (small models are launch-bound). Loading is not counted. GPU-hours
do not depend on how many GPUs a trial is sharded over (communication not counted).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bench import model_configs
from bench.method import method_traits


@dataclass(frozen=True)
class GPU:
    name: str
    memory_bytes: float
    bf16_flops: float  # dense peak
    bandwidth: float  # HBM bytes per second


H100 = GPU("H100 SXM 80 GB", 80e9, 989e12, 3.35e12)
H200 = GPU("H200 141 GB", 141e9, 989e12, 4.8e12)
USABLE = 0.9  # of a GPU's memory
MFU = 0.3  # assumed fraction of the bf16 peak a training or forward pass reaches
DECODE_EFFICIENCY = 0.5  # assumed fraction of the bandwidth a decoding step reaches
# Small models are launch-bound, not flop-bound: a pass takes at least this per layer
# (ASSUMPTION: paper-lite's estimate of a 12 ms SmolLM2 forward over its 30 layers).
LAYER_SECONDS = 0.4e-3


def _shape(source: str) -> dict[str, Any]:
    name = model_configs.SOURCE_SHAPES.get(source, source)
    return model_configs.resolve(name)


def weight_bytes(precision: str) -> int:
    return 2 if precision == "bf16" else 4


def trained_fraction(method: str, method_config: dict[str, Any]) -> float:
    """The fraction of parameters method `method` (a label: a variant reads its method)
    trains first-order at `method_config` (MethodTraits.fo_fraction; a field it names
    and the config lacks has the config class's default); 0 for a method not installed."""
    from bench.registry import MethodError, load_method

    try:
        cls = load_method(method)
    except MethodError:
        return 0.0
    defaults = {
        f.name: f.default
        for f in dataclasses.fields(cls.config_class)
        if f.default is not dataclasses.MISSING
    }
    return method_traits(cls).trained_fraction({**defaults, **method_config})


def memory_bytes(
    source: str,
    method: str,
    method_config: dict[str, Any],
    precision: str,
    tokens: int,
    has_backward: bool,
) -> dict[str, float]:
    """{state, activations, total} bytes of one step of `method` on `source`'s shape
    with `tokens` per step, on one device (the memory model above)."""
    shape = _shape(source)
    params = model_configs.parameter_count(shape)
    w = weight_bytes(precision)
    state = params * w * (1 + 3 * trained_fraction(method, method_config))
    hidden, layers, vocab = shape["hidden_size"], shape["num_hidden_layers"], shape["vocab_size"]
    if has_backward:
        per_token = 34 * hidden * layers * (2 if precision == "fp32" else 1) + 8 * vocab
    else:
        per_token = 34 * hidden + 4 * vocab
    activations = tokens * per_token
    return {
        "parameters": params,
        "state": state,
        "activations": activations,
        "total": state + activations,
    }


# Read-and-write sweeps over the ZO parameters of one two-sided SPSA step with the seed
# trick (hizfo/zo.py): +eps z, -2 eps z, then restore and update in one (+eps z - lr g z).
ZO_SWEEPS = 3


def zo_traffic_floor(
    parameters: float, bytes_per_parameter: float, forward_seconds: float, bandwidth: float
) -> dict[str, float]:
    """The floor of a ZO (MeZO) step with the parameter traffic it cannot avoid: two
    forwards, plus ZO_SWEEPS sweeps that each read and write every parameter once (z is
    regenerated from the seed on the chip, so it moves no bytes):

        step >= 2 F + 2 x ZO_SWEEPS x P x b / B,
        step / two forwards >= 1 + ZO_SWEEPS x P x b / (B x F),

    F the forward's time (which itself reads the weights once, P b / B at least), P the
    parameters, b their bytes, B the memory bandwidth. Returns {traffic_bytes,
    traffic_seconds, step_over_two_forwards}."""
    traffic = 2 * ZO_SWEEPS * parameters * bytes_per_parameter
    seconds = traffic / bandwidth
    return {
        "traffic_bytes": traffic,
        "traffic_seconds": seconds,
        "step_over_two_forwards": 1 + seconds / (2 * forward_seconds),
    }


def gpus_needed(total: float, gpu: GPU = H100) -> int:
    """GPUs to hold `total` bytes when sharded evenly (FSDP2 shards state and, with the
    batch split across ranks, activations)."""
    return max(1, math.ceil(total / (USABLE * gpu.memory_bytes)))


def trial_hours(spec: Any, traits: Any, gpu: GPU = H100) -> dict[str, float]:
    """GPU-hours of one trial spec (bench.spec.TrialSpec) by part: train, dev, sharpness,
    eval (the model above). `traits`: the method's bench.method.MethodTraits."""
    shape = _shape(spec.model)
    params = model_configs.parameter_count(shape)
    floor = shape["num_hidden_layers"] * LAYER_SECONDS  # one pass, launch-bound

    def passes(n: float, tokens: int) -> float:
        """Seconds of n forward-equivalents over `tokens` tokens each."""
        return n * max(2 * params * tokens / (MFU * gpu.bf16_flops), floor)

    length = spec.train.max_length
    steps = spec.train.steps if traits.step_cost else 0
    train = steps * passes(traits.step_cost, spec.train.batch_size * length)
    dev = 0.0
    if spec.dev.eval_every and steps:
        points = steps // spec.dev.eval_every + 1
        dev_batch = spec.dev.batch_size or spec.train.batch_size
        dev = points * passes(spec.dev.batches, dev_batch * length)
    sharp = 0.0
    if spec.measure.sharpness:
        m = spec.measure
        batches = math.ceil(m.examples / m.batch_size)
        n = (2 * m.directions + 1 + 5 * m.hessian_iters) * batches
        sharp = passes(n, m.batch_size * length)
    docs = spec.eval.limit if spec.eval.limit is not None else 1000
    # bf16 weights read once per decoding step, at least the launch-bound floor.
    decode_step = max(params * 2 / (DECODE_EFFICIENCY * gpu.bandwidth), floor)
    evaluate = 0.0
    if spec.phase != "tune":
        evaluate = math.ceil(docs / spec.eval.batch_size) * spec.eval.max_gen_toks * decode_step
    parts = {"train": train, "dev": dev, "sharpness": sharp, "eval": evaluate}
    return {k: v / 3600 for k, v in parts.items()}


def suite_hours(
    specs: Iterable[Any], traits_of: Any, gpu: GPU = H100
) -> dict[str, dict[str, float]]:
    """GPU-hours per model source of a suite's trial specs, by part, and "all"."""
    out: dict[str, dict[str, float]] = {}
    for spec in specs:
        hours = trial_hours(spec, traits_of(spec.method), gpu)
        row = out.setdefault(spec.model, {k: 0.0 for k in (*hours, "trials")})
        for k, v in hours.items():
            row[k] += v
        row["trials"] += 1
    total = {k: sum(r[k] for r in out.values()) for k in next(iter(out.values()), {})}
    return {**out, "all": total}


def tuning_trials(specs: Iterable[Any], plan: Any) -> list[Any]:
    """The tuning trials a suite plans, as specs with their cost (the points themselves
    do not change a trial's cost): per tuned (method, task, model), the method's budget
    (`plan.budget`, every stage) on each tuning seed, trained without test scoring and
    without sharpness. `plan` is a bench.orchestrate.tuning.TuningPlan."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for spec in specs:
        key = (spec.method, spec.task, spec.model)
        if spec.method not in plan.spaces or key in seen:
            continue
        seen.add(key)
        off = dataclasses.replace(spec.measure, sharpness=False)
        for seed in plan.seeds:
            tune = dataclasses.replace(spec, phase="tune", seed=seed, measure=off)
            out += [tune] * plan.budget(spec.method)
    return out
