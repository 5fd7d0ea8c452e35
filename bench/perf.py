"""`hizfo-bench perf`: step time and peak memory of each method next to their floors.

A ZO step cannot beat two forward passes and ZO memory cannot beat inference memory, so
this measures, in one process, on one model and one batch:

- references: a forward pass without gradients (inference), a forward plus backward
  pass, and a naive MeZO step written as MeZO's paper code does it (allocate z,
  ``p.data = p.data + eps * z``, four regenerations), kept here for comparison only;
- every method, through the registry and the real ``setup``/``step`` (never a
  re-implementation): its step time and its peak memory over the timed steps, in every
  variant its class declares (``perf_variants``: MeZO's keep_z / Rademacher opt-ins,
  Hi-ZFO's shared forward and one-sided estimator);
- beside each step, on the same model and batch, the floors its ratios need (a no-grad
  forward; for Hi-ZFO also the forward + backward with only its FO set requiring grad,
  i.e. the partial backward down to the deepest FO tensor), timed right after each step
  so that both see the same load on a shared machine. Hi-ZFO's own floor is that partial
  forward + backward plus one no-grad forward per other forward its step runs.

Ratios (METHOD_RATIOS) are defined once per method and computed for every row of that
method, keyed by the row's label ("mezo[keep_z]_step_over_two_forwards"); a ratio paired
with floors is the median over repeats of step_i / floor_i. Each target is printed with
its verdict, and ``--strict`` exits 1 when one is missed. The output starts with the
machine fingerprint (bench.measure.environment), which perf.json carries too.

Timing: ``warmup`` untimed calls, then the median (and min) of ``repeats`` timed calls,
with ``torch.cuda.synchronize`` around each on GPU. Setup (Hi-ZFO's profiling) is timed
apart, as in a trial.

Memory (one window per phase, `bench.trial.MemoryMeter`):
- GPU: ``torch.cuda.max_memory_allocated`` with the peak reset before the phase; it
  includes the weights.
- CPU: the peak resident set size (VmHWM, reset by writing 5 to /proc/self/clear_refs)
  minus the resident size when the phase starts, plus the bytes of the model's
  parameters and buffers; so both devices report weights + what the phase adds. Before
  each phase the garbage collector runs and glibc's ``malloc_trim(0)`` hands freed heap
  pages back to the kernel: otherwise a phase could reuse pages an earlier phase left
  resident and look smaller than it is. bench.models.load copies the weights into anonymous
  memory once after loading, because transformers may map them from the file lazily, and a phase
  that touched them first would count them as its own.

Output: ``perf.json`` (every measurement, the ratios and the targets) and, with ``--out``,
a run directory whose ``trials/<id>.json`` hold one trial record per method and model
(task "perf", seed 0, score null, train_seconds = median step time, peak_memory_bytes as
above, metrics = the ratios), which `hizfo-bench compare` tracks like any run.
docs/performance.md describes the shape and the numbers measured so far.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from bench.measure.environment import environment, machine
from bench.measure.memory import MemoryMeter, release_freed_memory, tensor_bytes
from bench.method import Batch, TrainContext, causal_lm_loss
from bench.record import TrialRecord
from bench.format import fmt_mib, fmt_s, id_slug

PERF_SCHEMA = 1

# ---- ratio definitions ---------------------------------------------------------------
#
# The only place method names appear: each definition names the registered method whose
# perf rows it applies to, and how that method is spelled in ratio keys. The keys of a
# method's rows come from its labels (method_variants): the default row of "mezo" gives
# "mezo_step_over_two_forwards", its "keep_z" row "mezo[keep_z]_step_over_two_forwards".

# Denominators a method row can be paired with, measured on the method's own model and
# interleaved with its steps (measure_method): "forward" (no-grad forward of the batch)
# and "partial_backward" (forward + backward with only the tensors the method left
# requiring grad: for Hi-ZFO, down to the deepest FO tensor).
FLOOR_PHASES = ("forward", "partial_backward")


@dataclass(frozen=True)
class MethodRatio:
    """One ratio computed for every perf row of one method.

    Attributes:
        method: registered method name whose rows (default and variants) get the ratio.
        prefix: how the method is spelled in the key ("fo" for fo-adamw); a variant's
            suffix goes after it in brackets.
        kind: what is divided by what, one of RATIO_KINDS (see compute_ratios).
        targets: (device, limit) pairs: "cpu", "cuda" or "any"; met when value <= limit.
        variants_only: only rows other than the default (kind "step_over_default").
    """

    method: str
    prefix: str
    kind: str
    targets: tuple[tuple[str, float], ...] = ()
    variants_only: bool = False

    def key(self, label: str) -> str:
        """The ratio's key for the row labelled `label` ("mezo[keep_z]", "hizfo")."""
        suffix = label[len(self.method) :]  # "" or "[variant]"
        kind = f"step_over_{self.prefix}_step" if self.kind == "step_over_default" else self.kind
        return f"{self.prefix}{suffix}_{kind}"

    @property
    def floors(self) -> tuple[str, ...]:
        """The FLOOR_PHASES this ratio needs measured beside the method's steps."""
        return RATIO_KINDS[self.kind]


# kind -> the floor phases it is paired with (numerator / denominator in compute_ratios).
RATIO_KINDS: dict[str, tuple[str, ...]] = {
    "step_over_two_forwards": ("forward",),  # step / 2 x forward
    "step_over_forward": ("forward",),  # step / forward
    "step_over_own_floor": FLOOR_PHASES,  # step / (partial fwd+bwd + other forwards)
    "peak_over_inference_peak": (),  # peak / the no-grad forward's peak
    "step_over_naive_mezo_step": (),  # step / the naive MeZO reference
    "step_over_fo_step": (),  # step / the default fo-adamw step
    "step_over_default": (),  # a variant's step / the method's default step
}

METHOD_RATIOS: tuple[MethodRatio, ...] = (
    MethodRatio("mezo", "mezo", "step_over_two_forwards", (("cpu", 1.3), ("cuda", 1.1))),
    MethodRatio("mezo", "mezo", "peak_over_inference_peak", (("cpu", 1.1), ("cuda", 1.05))),
    MethodRatio("mezo", "mezo", "step_over_naive_mezo_step"),
    MethodRatio("mezo", "mezo", "step_over_default", variants_only=True),
    MethodRatio("fo-adamw", "fo", "step_over_forward"),
    MethodRatio("fo-adamw", "fo", "peak_over_inference_peak"),
    MethodRatio("hizfo", "hizfo", "step_over_fo_step", (("any", 0.75),)),
    MethodRatio("hizfo", "hizfo", "step_over_own_floor", (("any", 1.1),)),
    MethodRatio("hizfo", "hizfo", "step_over_default", variants_only=True),
)
# The denominator of "step_over_fo_step".
FO_REFERENCE = "fo-adamw"

# Ratios of the references alone (measure_references' phases).
REFERENCE_RATIOS = ("naive_mezo_step_over_two_forwards", "forward_backward_over_forward")

# Random-init models of real architectures, run on GPU only: speed and memory do not
# depend on the weights, and a CPU would take minutes per step.
LARGE_MODELS: dict[str, dict[str, Any]] = {
    # Llama-3.2-1B's shape.
    "random:llama-3.2-1b": dict(
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=True,
    ),
    # TinyLlama-1.1B's shape.
    "random:tinyllama-1.1b": dict(
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
        tie_word_embeddings=False,
    ),
}


@dataclass
class PerfSettings:
    """What `hizfo-bench perf` measures.

    Attributes:
        model: model source (bench.models): the embedded model by default.
        batch_size, seq_len: the batch, random token ids of full length (speed does not
            depend on the tokens); 8 x 64 as in the mini suite.
        dtype: parameter dtype.
        device: "cpu", "cuda", or None for cuda when available.
        repeats: timed calls per phase (the median is reported).
        warmup: untimed calls before them.
        methods: registered method names, each run in the variants its class declares
            (``perf_variants``: MeZO default, keep_z, rademacher, both; Hi-ZFO at rho 0.5
            plain, shared_forward and one_sided). Missing methods are skipped.
        naive: also time the naive MeZO reference.
        large: on GPU, also the LARGE_MODELS.
        threads: torch intra-op threads (None: torch's default).
    """

    model: str = "smollm2-135m"
    batch_size: int = 8
    seq_len: int = 64
    dtype: str = "float32"
    device: str | None = None
    repeats: int = 5
    warmup: int = 1
    methods: tuple[str, ...] = ("mezo", "fo-adamw", "hizfo", "lora")
    naive: bool = True
    large: bool = True
    threads: int | None = None


# ---- measuring -----------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    fn: Callable[[int], Any],
    repeats: int,
    warmup: int,
    device: torch.device,
    *,
    after: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Median and min of `repeats` timed calls fn(i) after `warmup` untimed ones.

    `after(i)`, if given, runs after every call (warmup included), outside the timing:
    measure_method times the floors there, interleaved with the steps.
    """
    for i in range(warmup):
        fn(i)
        if after is not None:
            after(i)
    _sync(device)
    times = []
    for i in range(warmup, warmup + repeats):
        t0 = time.perf_counter()
        fn(i)
        _sync(device)
        times.append(time.perf_counter() - t0)
        if after is not None:
            after(i)
    return {"median_seconds": statistics.median(times), "min_seconds": min(times), "seconds": times}


def _trim_heap() -> None:
    release_freed_memory()


def model_bytes(model: torch.nn.Module) -> int:
    """Parameters and buffers, each storage once (tied weights)."""
    return tensor_bytes([*model.parameters(), *model.buffers()])


class PhaseMemory:
    """Peak memory of one phase, weights included on both devices (MemoryMeter)."""

    def __init__(self, device: torch.device, model: torch.nn.Module) -> None:
        self.device, self.model = device, model
        _trim_heap()
        self.meter = MemoryMeter(device)
        self.meter.start(model_bytes(model))

    def read(self) -> dict[str, Any]:
        return self.meter.read()


def measure_phase(
    fn: Callable[[int], Any], settings: PerfSettings, device: torch.device, model: torch.nn.Module
) -> dict[str, Any]:
    memory = PhaseMemory(device, model)
    result = time_calls(fn, settings.repeats, settings.warmup, device)
    result["memory"] = memory.read()
    result["peak_bytes"] = result["memory"]["peak_with_weights_bytes"]
    return result


# ---- models and the batch ------------------------------------------------------------


def load_model(source: str, dtype: str, device: torch.device) -> torch.nn.Module:
    """A fresh model: LARGE_MODELS built from their config with random init, else
    bench.models.load; weights moved into anonymous memory (module docstring)."""
    if source in LARGE_MODELS:
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(max_position_embeddings=4096, **LARGE_MODELS[source])
        with torch.device(device):
            model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    else:
        from bench import models

        model, _, _ = models.load(source, dtype=dtype, device=device)
    return model


def make_batch(
    model: torch.nn.Module, batch_size: int, seq_len: int, device: torch.device
) -> Batch:
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(
        0, vocab, (batch_size, seq_len), generator=torch.Generator().manual_seed(0)
    ).to(device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


# ---- the references ------------------------------------------------------------------


@torch.no_grad()
def naive_mezo_step(
    model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], seed: int, eps: float, lr: float
) -> float:
    """MeZO as its paper code writes it: z allocated and drawn four times per step, each
    perturbation a new tensor (``p.data = p.data + eps * z``). For comparison only."""
    params = list(model.parameters())

    def zs():
        torch.manual_seed(seed)  # MeZO reseeds the global RNG before every pass
        for p in params:
            yield torch.normal(0.0, 1.0, size=p.shape, device=p.device, dtype=p.dtype)

    for p, z in zip(params, zs(), strict=True):
        p.data = p.data + eps * z
    loss_plus = float(loss_fn())
    for p, z in zip(params, zs(), strict=True):
        p.data = p.data - 2 * eps * z
    loss_minus = float(loss_fn())
    for p, z in zip(params, zs(), strict=True):
        p.data = p.data + eps * z
    g = (loss_plus - loss_minus) / (2 * eps)
    for p, z in zip(params, zs(), strict=True):
        p.data = p.data - lr * g * z
    return g


def measure_references(
    model: torch.nn.Module, batch: Batch, settings: PerfSettings, device: torch.device
) -> dict[str, dict[str, Any]]:
    model.eval()
    # One unmeasured forward and backward first: one-time library setup (thread pools,
    # kernel caches) would otherwise land in whichever phase runs first.
    causal_lm_loss(model, batch).backward()
    model.zero_grad(set_to_none=True)
    model.requires_grad_(False)
    out: dict[str, dict[str, Any]] = {}

    def forward(_: int) -> None:
        with torch.no_grad():
            causal_lm_loss(model, batch)

    out["forward"] = measure_phase(forward, settings, device, model)

    model.requires_grad_(True)

    def forward_backward(_: int) -> None:
        causal_lm_loss(model, batch).backward()
        model.zero_grad(set_to_none=True)

    out["forward_backward"] = measure_phase(forward_backward, settings, device, model)
    model.requires_grad_(False)

    if settings.naive:
        # Saves torch's global RNG, which the paper code reseeds.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            out["naive_mezo"] = measure_phase(
                lambda i: naive_mezo_step(
                    model, lambda: causal_lm_loss(model, batch), i, 1e-3, 1e-7
                ),
                settings,
                device,
                model,
            )
    return out


# ---- the methods ---------------------------------------------------------------------


def method_variants(settings: PerfSettings) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, registered name, config overrides) of every method phase to run.

    A method class may declare ``perf_variants``: {suffix: config overrides}; "" is the
    plain row (labelled with the method's name), any other suffix a row labelled
    ``name[suffix]``. Methods without it get one row with their defaults.
    """
    from bench.registry import MethodError, load_method

    variants = []
    for name in settings.methods:
        try:
            cls = load_method(name)
        except MethodError:
            continue
        for suffix, overrides in (getattr(cls, "perf_variants", None) or {"": {}}).items():
            label = f"{name}[{suffix}]" if suffix else name
            variants.append((label, name, dict(overrides)))
    return variants


def floors_needed(name: str) -> tuple[str, ...]:
    """The FLOOR_PHASES the ratios of method `name` need (METHOD_RATIOS)."""
    needed = {f for r in METHOD_RATIOS if r.method == name for f in r.floors}
    return tuple(f for f in FLOOR_PHASES if f in needed)


def measure_method(
    name: str,
    overrides: dict[str, Any],
    source: str,
    settings: PerfSettings,
    device: torch.device,
    floors: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Setup and step time, and peak memory over the steps, of one method on a fresh model.

    `floors` (FLOOR_PHASES) are timed on the same model and batch right after each step,
    so a step and its floor see the same load on a shared machine (ratios are taken per
    repeat, then the median). They run inside the memory window; neither adds to the
    step's peak (a no-grad forward is inference, and the partial backward is the step's
    own backward without the optimizer).
    """
    from bench.config import build
    from bench.registry import load_method

    cls = load_method(name)
    method = cls(build(cls.config_class, overrides, name))
    model = load_model(source, settings.dtype, device)
    batch = make_batch(model, settings.batch_size, settings.seq_len, device)
    ctx = TrainContext(
        total_steps=settings.warmup + settings.repeats,
        seed=0,
        device=device,
        sample_batches=lambda n: [batch] * n,
    )
    setup_memory = PhaseMemory(device, model)
    t0 = time.perf_counter()
    model = method.setup(model, ctx)
    _sync(device)
    setup_seconds = time.perf_counter() - t0
    setup_peak = setup_memory.read()["peak_with_weights_bytes"]
    passes = {"forward": 0, "backward": 0}
    extra: dict[str, float] = {}
    floor_seconds: dict[str, list[float]] = {f: [] for f in floors}

    def forward() -> None:
        with torch.no_grad():
            ctx.loss_fn(model, batch)

    def partial_backward() -> None:
        # Whatever the method left requiring grad (Hi-ZFO: its FO set), so autograd
        # stops at the deepest of those tensors, as in the step's own backward.
        grads = [p for p in model.parameters() if p.requires_grad]
        if not grads:
            forward()
            return
        with torch.enable_grad():
            ctx.loss_fn(model, batch).backward()
        for p in grads:
            p.grad = None

    floor_fns = {"forward": forward, "partial_backward": partial_backward}

    def step(i: int) -> None:
        stats = method.step(batch, i)
        passes["forward"], passes["backward"] = stats.forward_passes, stats.backward_passes
        extra.update({k: float(v) for k, v in (stats.extra or {}).items() if k in _STEP_EXTRAS})

    def timed_floors(i: int) -> None:
        for f in floors:
            _sync(device)
            t = time.perf_counter()
            floor_fns[f]()
            _sync(device)
            if i >= settings.warmup:
                floor_seconds[f].append(time.perf_counter() - t)

    memory = PhaseMemory(device, model)
    result = time_calls(step, settings.repeats, settings.warmup, device, after=timed_floors)
    result["memory"] = memory.read()
    result["peak_bytes"] = result["memory"]["peak_with_weights_bytes"]
    result.update(
        setup_seconds=setup_seconds,
        setup_peak_bytes=setup_peak,
        passes_per_step=passes,
        step_extras=extra,
        floors={
            f: {
                "median_seconds": statistics.median(t),
                "min_seconds": min(t),
                "seconds": t,
            }
            for f, t in floor_seconds.items()
        },
        method_config=asdict(method.config),
    )
    return result  # the model and the method's state go with this frame


# StepStats.extra entries kept in the perf record (what the step says about its cost).
_STEP_EXTRAS = ("backward_depth", "z_draws", "fo_tensors")


# ---- ratios, targets, records --------------------------------------------------------


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _paired_median(steps: list[float], floors: list[float]) -> float | None:
    """Median of step_i / floor_i over repeats timed side by side (same load)."""
    pairs = [a / b for a, b in zip(steps, floors, strict=False) if b > 0]
    return statistics.median(pairs) if pairs else None


def _ok(result: dict[str, Any] | None) -> bool:
    return bool(result) and result.get("status") == "ok"


def ratio_value(
    ratio: MethodRatio,
    result: dict[str, Any],
    default: dict[str, Any] | None,
    refs: dict[str, Any],
    methods: dict[str, Any],
) -> float | None:
    """One ratio of one method row; None when a part of it was not measured."""
    if not _ok(result):
        return None
    step, steps = result["median_seconds"], result["seconds"]
    floors = result.get("floors", {})
    fwd_ref = refs["forward"]["median_seconds"]
    kind = ratio.kind
    if kind in ("step_over_two_forwards", "step_over_forward"):
        n = 2 if kind == "step_over_two_forwards" else 1
        if "forward" in floors:
            return _paired_median(steps, [n * t for t in floors["forward"]["seconds"]])
        return _div(step, n * fwd_ref)
    if kind == "step_over_own_floor":
        if not all(f in floors for f in FLOOR_PHASES):
            return None
        # The passes the step runs: one forward with its (partial) backward when it has a
        # backward, every other forward at no-grad cost.
        forwards = result["passes_per_step"]["forward"]
        has_backward = result["passes_per_step"]["backward"] > 0
        pb, fw = floors["partial_backward"]["seconds"], floors["forward"]["seconds"]
        own = [
            (b + (forwards - 1) * f) if has_backward else forwards * f
            for b, f in zip(pb, fw, strict=True)
        ]
        return _paired_median(steps, own)
    if kind == "peak_over_inference_peak":
        return _div(result["peak_bytes"], refs["forward"]["peak_bytes"])
    if kind == "step_over_naive_mezo_step":
        return _div(step, refs.get("naive_mezo", {}).get("median_seconds"))
    if kind == "step_over_fo_step":
        fo = methods.get(FO_REFERENCE)
        return _div(step, fo["median_seconds"]) if _ok(fo) else None
    if kind == "step_over_default":
        return _div(step, default["median_seconds"]) if default and _ok(default) else None
    raise ValueError(f"unknown ratio kind {kind!r}")


def compute_ratios(
    refs: dict[str, Any], methods: dict[str, Any]
) -> tuple[dict[str, float | None], dict[str, MethodRatio]]:
    """Every ratio of the references and of each method row, keyed by the row's label.

    Returns (ratios, definitions): the definition each method ratio key came from (for
    its targets).
    """
    fwd = refs["forward"]["median_seconds"]
    naive = refs.get("naive_mezo", {}).get("median_seconds")
    ratios: dict[str, float | None] = {
        "naive_mezo_step_over_two_forwards": _div(naive, 2 * fwd),
        "forward_backward_over_forward": _div(refs["forward_backward"]["median_seconds"], fwd),
    }
    definitions: dict[str, MethodRatio] = {}
    for ratio in METHOD_RATIOS:
        for label, result in methods.items():
            if result.get("method") != ratio.method:
                continue
            if ratio.variants_only and label == ratio.method:
                continue
            key = ratio.key(label)
            definitions[key] = ratio
            ratios[key] = ratio_value(ratio, result, methods.get(ratio.method), refs, methods)
    return ratios, definitions


def check_targets(
    ratios: dict[str, float | None],
    definitions: dict[str, MethodRatio],
    device: torch.device,
) -> list[dict[str, Any]]:
    """One row per ratio with a target on this device: {ratio, limit, device, value, met}
    (met None when the ratio was not measured)."""
    rows = []
    for key, ratio in definitions.items():
        for where, limit in ratio.targets:
            if where not in ("any", device.type):
                continue
            value = ratios.get(key)
            rows.append(
                {
                    "ratio": key,
                    "limit": limit,
                    "device": where,
                    "value": value,
                    "met": None if value is None else value <= limit,
                }
            )
    return rows


def trial_record(
    label: str,
    source: str,
    result: dict[str, Any],
    ratios: dict[str, float | None],
    settings: PerfSettings,
    environment: dict[str, Any],
) -> dict[str, Any]:
    """A TrialRecord (bench/record.py) for one method on one model."""
    ok = result.get("status") == "ok"
    metrics: dict[str, Any] = {k: v for k, v in ratios.items() if v is not None}
    if ok:
        metrics.update(
            step_seconds_median=result["median_seconds"],
            step_seconds_min=result["min_seconds"],
            setup_seconds=result["setup_seconds"],
        )
    return TrialRecord(
        trial_id=f"perf-{id_slug(label)}-{id_slug(source)}-{settings.dtype}",
        method=label,
        task="perf",
        model=source,
        seed=0,
        status="ok" if ok else "failed",
        error=result.get("error"),
        metrics=metrics,
        train_seconds=result.get("median_seconds"),
        peak_memory_bytes=result.get("peak_bytes"),
        memory=result.get("memory"),
        steps=settings.warmup + settings.repeats if ok else 0,
        passes=result.get("passes_per_step"),
        config={
            "perf": asdict(settings),
            "model": source,
            "method_config": result.get("method_config"),
        },
        environment=environment,
        # Every timed repeat: the samples `compare --history` tests step times on.
        extra={"step_seconds": result["seconds"]} if ok else {},
    ).to_dict()


# ---- the whole benchmark -------------------------------------------------------------


def measure_model(
    source: str, settings: PerfSettings, device: torch.device, log: Callable[[str], None]
) -> dict[str, Any]:
    load_before = machine()["loadavg"]
    model = load_model(source, settings.dtype, device)
    batch = make_batch(model, settings.batch_size, settings.seq_len, device)
    parameters = sum(p.numel() for p in model.parameters())
    log(f"{source}: {parameters / 1e6:.1f}M parameters, references ...")
    refs = measure_references(model, batch, settings, device)
    del model, batch
    _trim_heap()

    methods: dict[str, Any] = {}
    for label, name, overrides in method_variants(settings):
        log(f"{source}: {label} ...")
        try:
            methods[label] = {"status": "ok", "method": name}
            methods[label].update(
                measure_method(
                    name, overrides, source, settings, device, floors=floors_needed(name)
                )
            )
        except Exception as e:  # one failing method must not hide the others' numbers
            methods[label] = {
                "status": "failed",
                "method": name,
                "error": f"{type(e).__name__}: {e}",
            }
        _trim_heap()
    ratios, definitions = compute_ratios(refs, methods)
    return {
        "model": source,
        "parameters": parameters,
        "loadavg_before": load_before,
        "loadavg_after": machine()["loadavg"],
        "references": refs,
        "methods": methods,
        "ratios": ratios,
        "targets": check_targets(ratios, definitions, device),
    }


def run_perf(
    settings: PerfSettings, *, log: Callable[[str], None] = lambda s: None
) -> dict[str, Any]:
    """Measure every model; returns the perf.json summary (with trial records under
    "trials")."""

    device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sources = [settings.model]
    if device.type == "cuda" and settings.large:
        sources += list(LARGE_MODELS)
    threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        env = environment(device)
        env["machine"] = {**env["machine"], **machine()}  # fingerprint + load
        models = [measure_model(s, settings, device, log) for s in sources]
    finally:
        torch.set_num_threads(threads)
    trials = []
    for m in models:
        for label, result in m["methods"].items():
            trials.append(trial_record(label, m["model"], result, m["ratios"], settings, env))
    return {
        "schema": PERF_SCHEMA,
        "settings": asdict(settings),
        "device": str(device),
        "environment": env,
        "ratios": models[0]["ratios"],
        "targets": models[0]["targets"],
        "models": models,
        "trials": trials,
    }


def write_outputs(summary: dict[str, Any], *, out: Path | None, json_path: Path | None) -> None:
    """perf.json at json_path and/or a run directory at out (trials/ + perf.json)."""
    from bench.store import write_json_atomic, write_trial

    if out is not None:
        for record in summary["trials"]:
            write_trial(out, record)
        write_json_atomic(Path(out) / "perf.json", summary)
    if json_path is not None:
        write_json_atomic(Path(json_path), summary)


def _fingerprint_line(summary: dict[str, Any]) -> str:
    env = summary.get("environment") or {}
    fp = env.get("machine") or {}
    gpus = ", ".join(g["name"] for g in fp.get("gpus") or []) or "no GPU"
    return (
        f"machine {env.get('machine_key', '?')}: {fp.get('cpu_model') or '?'}, "
        f"{fp.get('cpu_count')} cores, {gpus}; torch {(env.get('packages') or {}).get('torch')}, "
        f"{env.get('torch_threads')} threads"
    )


def render(summary: dict[str, Any]) -> str:
    """Plain-text tables of every model's measurements, ratios and targets, under the
    machine fingerprint (timings mean something only next to the machine and its load)."""
    lines = [_fingerprint_line(summary)]
    for m in summary["models"]:
        lines.append(
            f"\n{m['model']} ({m['parameters'] / 1e6:.1f}M parameters) on {summary['device']}, "
            f"load average {m['loadavg_before']} -> {m['loadavg_after']}"
        )
        lines.append(f"  {'phase':30s} {'median':>10s} {'min':>10s} {'peak':>12s}")
        rows = [(k, v) for k, v in m["references"].items()] + list(m["methods"].items())
        for label, r in rows:
            if r.get("status", "ok") != "ok":
                lines.append(f"  {label:30s} failed: {r.get('error')}")
                continue
            lines.append(
                f"  {label:30s} {fmt_s(r['median_seconds'], 3, 8):>10s} "
                f"{fmt_s(r['min_seconds'], 3, 8):>10s} {fmt_mib(r['peak_bytes'], 1, 8):>12s}"
            )
            for floor, f in (r.get("floors") or {}).items():
                lines.append(
                    f"    {'beside it: ' + floor:28s} {fmt_s(f['median_seconds'], 3, 8):>10s} "
                    f"{fmt_s(f['min_seconds'], 3, 8):>10s}"
                )
        targets: dict[str, list[dict[str, Any]]] = {}
        for t in m["targets"]:
            targets.setdefault(t["ratio"], []).append(t)
        lines.append("  ratios (target: met / MISSED):")
        for key, value in m["ratios"].items():
            text = f"    {key:50s} {'-' if value is None else f'{value:.3f}':>7s}"
            for t in targets.get(key, []):
                verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
                text += f"  <= {t['limit']:<5} {verdict}"
            lines.append(text)
        missed = [t["ratio"] for t in m["targets"] if t["met"] is False]
        lines.append(
            f"  targets: {sum(t['met'] is True for t in m['targets'])} met, {len(missed)} missed"
            + (f" ({', '.join(missed)})" if missed else "")
        )
    return "\n".join(lines)
