"""Seeded SPSA with MeZO's seed trick, shared by the MeZO baseline and Hi-ZFO.

One two-sided step with q = 1 (Malladi et al., 2023, arXiv 2305.17333):

    theta += eps z;  L+ = L(theta)
    theta -= 2 eps z; L- = L(theta)
    g = (L+ - L-) / (2 eps)                        # the projected gradient
    theta += eps z;  theta -= lr (g z + wd theta)   # restore, then update

Methods built on other updates (the ZO plugins) use the public parts: SPSA.probe, the
two-point estimate above (perturb, two losses, restore), and SPSA.tensor_z, the z of a
seed one tensor at a time (for a momentum buffer or an optimizer's .grad), so none of
them copies the probe or holds a second copy of the weights for z. A direction may also
be a combination u = sum_i c_i z(s_i) of seeded z's (perturb_along_,
restore_and_update_along_), regenerated term by term in every pass and never stored:
GuidedSPSA (at the end of this file) uses it for MeZO-GV and MeZO-Greedy, which choose
u from a pool of candidate perturbations (Jin, Cen and Tan, arXiv 2601.04710).

The one-sided estimator (SPSAConfig.estimator = "one-sided") replaces L- by L(theta)
itself, g = (L+ - L(theta)) / eps: one forward fewer when L(theta) is already known
(Hi-ZFO's FO forward gives it), at the price of an O(eps) bias (docs/hizfo.md).

z is never stored by default: it is regenerated from a seed each time it is needed.
Naive MeZO draws z four times per step; here the restore and the update are one fused
pass, so z is drawn three times (keep_z=True draws it once and keeps it, at the memory
of one more copy of the perturbed tensors). A pass is fused across tensors: the tensors
are planned once into buckets (plan_buckets: runs of consecutive tensors, a large one
cut at multiples of 16 elements) of about 1/DEFAULT_BUCKETS of the ZO weights; each
bucket's z is drawn into one reused flat buffer through this object's own
torch.Generator and applied with one torch._foreach_* call, so a pass costs O(buckets)
operator calls instead of O(tensors), no z is allocated per step, the buffer is ~3% of
the ZO weights and torch's global RNG state is never touched. Drawing normals is the
expensive part on a CPU, which is why every pass matters (docs/performance.md).

z is N(0, I) by default; distribution="rademacher" draws +-1 entries instead (cheaper:
eight entries per generator call). SPSA only needs E[z z^T] = I for the projected
gradient g z to be an unbiased estimate of the gradient of a smooth loss, and both
distributions have it.

Seeds are 64-bit. torch's CPU generator (mt19937) keeps only the low 32 bits of a
manual_seed, so two seeds that differ above bit 31 would draw the same z; seed_generator
builds the full mt19937 state from all 64 bits instead (init_by_array of the two 32-bit
halves, the reference 64-bit seeding), and seeds below 2**32 keep torch's own stream.

On a CPU two more things keep a pass near the cost of the draws themselves
(docs/performance.md has the measurements):
- z is the same as tensor by tensor. torch's CPU normal_ fills a contiguous tensor of
  at least 16 elements with uniforms, transforms them in blocks of 16 and, when its
  length is not a multiple of 16, recomputes the last 16 from 16 more uniforms; so the
  z of consecutive tensors (or pieces) whose lengths are multiples of 16 is one
  generator call with exactly the numbers of separate calls, and a tensor of another
  length (at least 16) may end such a call. Tensors under 16 elements (a scalar path)
  get a call of their own. Rademacher draws take one byte (8 signs) per generator call,
  so they concatenate at multiples of 8. On CUDA (Philox) every tensor stays a call of
  its own unless stream="bucket" defines z per bucket instead (SPSA).
- a pass runs with one intra-op thread. normal_ with a generator is serial anyway, and
  the add that follows each draw is too small to gain from a second thread; with two,
  every add waits for the other thread to be scheduled, which on a busy 2-core box
  measured 8x slower than one thread.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

import torch

from hizfo.schedule import scheduled_lr

_MASK64 = (1 << 64) - 1
_MASK32 = (1 << 32) - 1
# Buckets per pass by default (SPSA's bucket_numel = ceil(numel / DEFAULT_BUCKETS)): a
# pass costs O(DEFAULT_BUCKETS) operator calls whatever the tensor count, and the
# reused z buffer is 1/32 (3.1%) of the ZO weights, under MeZO's 5% memory target.
DEFAULT_BUCKETS = 32
# The smallest default bucket (256 KiB of float32), so a small model is a bucket or two.
MIN_BUCKET_NUMEL = 1 << 16
# On a CPU (unless launch_plan() is on) a stream-"tensor" pass goes in buckets of at most
# this many elements (1 MiB of float32): a bucket's z is drawn and added while it is in
# a core's L2 cache. On SmolLM2-135M, 2-core Xeon: 0.433 s per pass against 0.478 s
# with 1/32 buckets (docs/performance.md). The calls then grow with the parameter count,
# which costs microseconds on a CPU; on a GPU, where each call is a kernel launch, the
# 1/32 buckets are kept.
CPU_BUCKET_NUMEL = 1 << 18
_LAUNCH_PLAN = [False]  # launch_plan()'s switch
# How z is cut into generator calls (SPSA's stream): "tensor" (per tensor, the default,
# fused where that leaves the numbers unchanged) or "bucket" (one call per bucket).
STREAMS = ("tensor", "bucket")
DISTRIBUTIONS = ("gaussian", "rademacher")
ESTIMATORS = ("two-sided", "one-sided")
# Estimators that choose the step's direction from a pool of candidates (GuidedSPSA):
# MeZO-GV and MeZO-Greedy (Jin, Cen and Tan, arXiv 2601.04710).
GUIDED_ESTIMATORS = ("gv", "greedy")
# Every estimator a ZO part can name (Hi-ZFO's zo_estimator).
ZO_ESTIMATORS = (*ESTIMATORS, *GUIDED_ESTIMATORS)


def _tag_value(value: int | str) -> int:
    """An integer for a derive_seed argument: ints as they are, strings (domain tags)
    through a stable hash (not Python's hash(), which is salted per process)."""
    if isinstance(value, str):
        return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "little")
    return int(value)


def derive_seed(*values: int | str) -> int:
    """A deterministic 63-bit seed mixed from integers and string tags (splitmix64
    finaliser per value).

    Used for per-step seeds (base seed, step), per-direction seeds (step seed,
    "direction", i) and per-device seeds (seed, "device", k). The string tags keep the
    domains apart: the seed of direction 1 is not the seed of device 1.
    """
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (_tag_value(v) & _MASK64)) & _MASK64
        h = (h + 0x9E3779B97F4A7C15) & _MASK64
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK64
        h ^= h >> 31
    return h >> 1


# torch's CPU generator state (CPUGeneratorImplStateLegacy): the_initial_seed (u64),
# left (i32), seeded (i32), next (u64), state[624] (u64 each holding a 32-bit word), the
# cached normals; 5056 bytes since torch 1.x.
_CPU_STATE_BYTES = 5056
_MT_OFFSET, _MT_N = 24, 624


@lru_cache(maxsize=8)
def _mt19937_state(seed: int) -> torch.Tensor:
    """The 624 words of mt19937 seeded by init_by_array([low 32 bits, high 32 bits]),
    the reference generator's seeding from more than 32 bits of key."""
    n = _MT_N
    mt = [0] * n
    mt[0] = 19650218
    for i in range(1, n):
        mt[i] = (1812433253 * (mt[i - 1] ^ (mt[i - 1] >> 30)) + i) & _MASK32
    key = [seed & _MASK32, (seed >> 32) & _MASK32]
    i, j = 1, 0
    for _ in range(max(n, len(key))):
        mt[i] = ((mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1664525)) + key[j] + j) & _MASK32
        i, j = i + 1, j + 1
        if i >= n:
            mt[0], i = mt[n - 1], 1
        if j >= len(key):
            j = 0
    for _ in range(n - 1):
        mt[i] = ((mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1566083941)) - i) & _MASK32
        i += 1
        if i >= n:
            mt[0], i = mt[n - 1], 1
    mt[0] = 0x80000000
    return torch.tensor(mt, dtype=torch.int64).view(torch.uint8)


def seed_generator(generator: torch.Generator, seed: int) -> None:
    """Seed `generator` with all 64 bits of `seed` (0 <= seed < 2**64).

    CUDA generators (Philox) take 64-bit seeds as they are. The CPU generator keeps only
    the low 32 bits of manual_seed, so for seeds >= 2**32 its mt19937 state is built
    from both halves (init_by_array); seeds < 2**32 give torch's usual stream.
    """
    if not 0 <= seed <= _MASK64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    generator.manual_seed(seed)
    if generator.device.type != "cpu" or seed <= _MASK32:
        return
    state = generator.get_state()
    if state.numel() != _CPU_STATE_BYTES:  # pragma: no cover - a torch we do not know
        raise RuntimeError(
            f"unknown CPU generator state layout ({state.numel()} bytes); cannot seed with 64 bits"
        )
    state[_MT_OFFSET : _MT_OFFSET + 8 * _MT_N] = _mt19937_state(seed)
    generator.set_state(state)


@contextmanager
def single_intra_op_thread(enabled: bool = True) -> Iterator[None]:
    """Run the block with one intra-op thread (restored after) when `enabled`.

    For a pass of small elementwise ops or one-vector reductions over CPU tensors: with
    two threads each op waits for the other thread to be scheduled, which on a busy 2-core
    box measured 8-10x slower than one thread (docs/performance.md)."""
    threads = torch.get_num_threads()
    if not enabled or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextmanager
def launch_plan() -> Iterator[None]:
    """Within the block, plan work on every device as on a GPU (launch_bound is True):
    SPSA passes in 1/DEFAULT_BUCKETS buckets, Hi-ZFO's fo_gain dots grouped. The floats
    are the same either way for stream "tensor" (fo_gain: to rounding). `hizfo-bench
    perf` counts a step's operator calls under it, so that a CPU count guards the launch
    structure a GPU step has (bench/perf/ops.py)."""
    previous = _LAUNCH_PLAN[0]
    _LAUNCH_PLAN[0] = True
    try:
        yield
    finally:
        _LAUNCH_PLAN[0] = previous


def launch_bound(devices: Iterable[torch.device]) -> bool:
    """Whether work on `devices` is planned for few calls (each a kernel launch on a
    GPU) rather than for a CPU's caches: any device that is not a CPU, or launch_plan()."""
    return _LAUNCH_PLAN[0] or any(torch.device(d).type != "cpu" for d in devices)


def default_no_decay(name: str, param: torch.Tensor) -> bool:
    """True for tensors that get no weight decay: biases and norm weights (as in MeZO).

    A tensor is exempt when its name contains "bias" or "norm" (any case) or it has at
    most one dimension.
    """
    lowered = name.lower()
    return "bias" in lowered or "norm" in lowered or param.ndim <= 1


@dataclass
class SPSAConfig:
    """Settings of the SPSA estimator.

    Attributes:
        eps: perturbation scale. Default 1e-3 is MeZO's (large_models/mezo.sh) for
            full-parameter tuning.
        q: number of random directions per step; their updates are averaged. Default 1
            as in MeZO and ZO-Bench.
        weight_decay: decoupled from the gradient estimate as in MeZO's update
            theta -= lr (g z + wd theta); not applied to biases and norm weights. Default
            0.0 (MeZO's scripts use none).
        estimator: "two-sided" (default, MeZO): g = (L(theta + eps z) - L(theta - eps z))
            / (2 eps), bias O(eps^2). "one-sided": g = (L(theta + eps z) - L(theta)) / eps,
            bias O(eps) (eps/2 times the curvature along z), one forward per direction
            plus one L(theta) per step, which a caller that has L(theta) already (Hi-ZFO's
            FO forward) passes in for free.
    """

    eps: float = 1e-3
    q: int = 1
    weight_decay: float = 0.0
    estimator: str = "two-sided"

    def __post_init__(self) -> None:
        if self.eps <= 0:
            raise ValueError(f"SPSAConfig.eps must be > 0, got {self.eps}")
        if self.q < 1:
            raise ValueError(f"SPSAConfig.q must be >= 1, got {self.q}")
        if self.weight_decay < 0:
            raise ValueError(f"SPSAConfig.weight_decay must be >= 0, got {self.weight_decay}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(
                f"SPSAConfig.estimator must be one of {', '.join(ESTIMATORS)}, "
                f"got {self.estimator!r}"
            )


@dataclass
class SPSAStepResult:
    """What one SPSA step measured.

    Attributes:
        loss: two-sided: mean over the q perturbations of (L+ + L-) / 2; one-sided:
            L(theta), the loss at the unperturbed point.
        projected_grads: the q projected gradients, (L+ - L-) / (2 eps) or
            (L+ - L(theta)) / eps.
        forward_passes: loss evaluations run by this step (2 q two-sided; q one-sided,
            plus one when L(theta) was not given).
        z_draws: passes over the perturbed tensors that drew z from the generator (the
            CPU's dominant cost): 3 for a two-sided q = 1 step, 2 one-sided, 1 with
            keep_z. Passes that reuse a kept z are not counted.
    """

    loss: float
    projected_grads: list[float]
    forward_passes: int
    z_draws: int = 0


@dataclass
class SPSAProbe:
    """One two-point probe along z(seed) (SPSA.probe).

    Attributes:
        loss_plus: L(theta + eps z).
        loss_minus: L(theta - eps z).
        projected_grad: (loss_plus - loss_minus) / (2 eps), the estimate of the
            directional derivative z . grad L(theta); g z estimates the gradient.
    """

    loss_plus: float
    loss_minus: float
    projected_grad: float

    @property
    def loss(self) -> float:
        """(L+ + L-) / 2, the loss MeZO reports for a step."""
        return (self.loss_plus + self.loss_minus) / 2


@dataclass
class _Entry:
    name: str
    param: torch.Tensor
    decay: bool


@dataclass
class _Piece:
    """Elements [start, stop) of entry `entry`'s flattened tensor, at `offset` in its
    bucket's buffer."""

    entry: int
    start: int
    stop: int
    offset: int


@dataclass
class ZOBucket:
    """A run of consecutive ZO tensors (or parts of them) whose z fills one flat buffer.

    Attributes:
        draw_device: the device whose generator draws this bucket's z.
        device: the tensors' device (z is copied there when it is not draw_device).
        dtype: the tensors' dtype, and z's.
        numel: elements in the bucket.
        segments: [a, b) ranges of the buffer, one generator call each (SPSA's plan).
        pieces: the parts of tensors the bucket covers, in order.
    """

    draw_device: torch.device
    device: torch.device
    dtype: torch.dtype
    numel: int = 0
    segments: list[tuple[int, int]] = field(default_factory=list)
    pieces: list[_Piece] = field(default_factory=list)
    open_segment: bool = field(default=False, repr=False)

    @property
    def key(self) -> tuple[torch.device, torch.device, torch.dtype]:
        return (self.draw_device, self.device, self.dtype)


def _merges(length: int, distribution: str, stream: str, cpu: bool) -> tuple[bool, bool]:
    """(may join the open draw segment, keeps it open after) for a piece of `length`.

    stream "tensor" on a CPU generator: torch's normal_ fills a contiguous tensor of at
    least 16 elements with uniforms, transforms them in blocks of 16 and, when the
    length is not a multiple of 16, recomputes the last 16 from 16 more uniforms; so
    pieces of multiples of 16 concatenate into one call with the same numbers, and a
    piece that is not a multiple of 16 (at least 16 long) can end such a call. Fewer
    than 16 elements take the scalar path: a call of their own. Rademacher bytes
    concatenate at multiples of 8. Elsewhere (CUDA's Philox) every piece is a call.
    stream "bucket": one call per bucket, always.
    """
    if stream == "bucket":
        return True, True
    if not cpu:
        return False, False
    if distribution == "rademacher":
        return True, length % 8 == 0
    if length < 16:
        return False, False
    return True, length % 16 == 0


def plan_buckets(
    params: Sequence[torch.Tensor],
    draw_devices: Sequence[torch.device],
    bucket_numel: int,
    *,
    distribution: str = "gaussian",
    stream: str = "tensor",
) -> list[ZOBucket]:
    """Cut the tensors, in order, into buckets of at most `bucket_numel` elements (a
    multiple of 16), each a run of one (draw device, device, dtype).

    A contiguous tensor is cut at multiples of 16 from its start, its last piece at
    least 16 long, when its z is drawn on a CPU generator or `stream` is "bucket";
    otherwise (CUDA, stream "tensor", where cutting would change the Philox stream, or
    a non-contiguous tensor) it goes whole, in a bucket of its own if it does not fit
    (that bucket is then larger than bucket_numel; so is, by up to 15, a bucket holding
    only the short last piece of a tensor when bucket_numel is under 32). See _merges for the draw segments.
    """
    buckets: list[ZOBucket] = []
    current: ZOBucket | None = None
    for i, (p, draw) in enumerate(zip(params, draw_devices, strict=True)):
        n, key = p.numel(), (draw, p.device, p.dtype)
        cuttable = p.is_contiguous() and (draw.type == "cpu" or stream == "bucket")
        start = 0
        while start < n:
            if current is None or current.key != key or current.numel >= bucket_numel:
                current = ZOBucket(draw, p.device, p.dtype)
                buckets.append(current)
            room, left = bucket_numel - current.numel, n - start
            take = left
            if left > room and cuttable:
                take = room - room % 16
                if 0 < left - take < 16:
                    take -= 16
                if take <= 0 and current.numel == 0:
                    take = left  # a tail under 32: the bucket grows by up to 15
            elif left > room and current.numel > 0:
                take = 0
            if take <= 0:
                current = None
                continue
            joins, stays_open = _merges(take, distribution, stream, draw.type == "cpu")
            a = current.numel
            if joins and current.open_segment:
                current.segments[-1] = (current.segments[-1][0], a + take)
            else:
                current.segments.append((a, a + take))
            current.open_segment = joins and stays_open
            current.pieces.append(_Piece(i, start, start + take, a))
            current.numel += take
            start += take
    return buckets


class SPSA:
    """Seeded SPSA over a fixed, ordered set of tensors, updated in place.

    z for a seed is defined as (stream "tensor", the default): seed this object's
    generator for each device (the first device with `seed`, later ones with
    derive_seed(seed, "device", k)) through seed_generator (all 64 bits), then for each
    tensor, in the order given, draw `numel` entries from its device's generator:
    standard normals, or for "rademacher" one uniform byte per 8 entries whose bits,
    lowest first, give the signs (bit 1 -> +1). Tensors repeated in `named_params`
    (tied weights) are kept once.

    Fused passes: the tensors are planned once into buckets (plan_buckets, `buckets`):
    runs of consecutive tensors, or parts of a large one, whose z fills one reused flat
    buffer of bucket_numel elements. A pass draws a bucket's z (on a CPU generator one
    generator call for every run of tensors whose sizes are multiples of 16: the same
    numbers as tensor by tensor, see _merges) and applies it with one torch._foreach_*
    call per bucket (two with weight decay), so a pass costs O(buckets) operator calls,
    not O(tensors). With the default bucket_numel (ceil(numel / DEFAULT_BUCKETS)) that
    is about DEFAULT_BUCKETS buckets whatever the model, and the buffer is 1 /
    DEFAULT_BUCKETS of the ZO weights; on CPUs the default bucket is at most
    CPU_BUCKET_NUMEL (cache-sized: faster there, more calls) unless launch_plan().

    stream "bucket" defines z per bucket instead: each bucket's buffer is one generator
    call of `numel` entries. On a CPU generator this is the "tensor" stream whenever
    every tensor's size is a multiple of 16 (every LLM shape here; elsewhere the
    entries after such a tensor differ), and it makes a CUDA pass one draw per bucket
    instead of one per tensor; z then depends on bucket_numel. Same distribution, so
    SPSA's expectations hold; runs differ from stream "tensor" runs as runs with
    another seed do.

    Args:
        named_params: (name, tensor) pairs to perturb and update, e.g.
            model.named_parameters().
        config: eps, q, weight decay and estimator.
        no_decay: predicate for tensors exempt from weight decay.
        generator_device: None (default) draws z on each tensor's own device, the fast
            path. A device (e.g. "cpu") draws every z there and copies it over, which gives
            the same z on any hardware (CPU and CUDA generators produce different
            streams) at the price of a copy per bucket.
        bucket_numel: elements per bucket (rounded down to a multiple of 16, at least
            16). None (default): ceil(numel / DEFAULT_BUCKETS), at least
            MIN_BUCKET_NUMEL, and on CPUs with stream "tensor" at most CPU_BUCKET_NUMEL
            (cache-sized; launch_plan() lifts that). On a CUDA generator with stream "tensor" a tensor larger
            than the bucket is drawn whole into a buffer of its own size.
        chunk_numel: the former name of bucket_numel (used when bucket_numel is None).
        single_thread: run each CPU pass with one intra-op thread (restored after).
        keep_z: keep the z of the current seed in memory (one more copy of the perturbed
            tensors, as one buffer per bucket), so a step draws it once instead of three
            times; the numbers are those of the default path, so updates agree to
            rounding. Default False: the seed trick's point is to store nothing.
        distribution: "gaussian" (default, MeZO) or "rademacher" (+-1 entries, cheaper to
            draw; E[z z^T] = I still holds, so the estimate stays unbiased for smooth
            losses; docs/hizfo.md).
        stream: "tensor" (default) or "bucket", the definition of z above.
    """

    def __init__(
        self,
        named_params: Iterable[tuple[str, torch.Tensor]],
        config: SPSAConfig,
        *,
        no_decay: Callable[[str, torch.Tensor], bool] = default_no_decay,
        generator_device: torch.device | str | None = None,
        bucket_numel: int | None = None,
        chunk_numel: int | None = None,
        single_thread: bool = True,
        keep_z: bool = False,
        distribution: str = "gaussian",
        stream: str = "tensor",
    ) -> None:
        if distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}"
            )
        if stream not in STREAMS:
            raise ValueError(f"stream must be one of {', '.join(STREAMS)}, got {stream!r}")
        self.config = config
        self.single_thread = single_thread
        self.keep_z = keep_z
        self.distribution = distribution
        self.stream = stream
        self.generator_device = None if generator_device is None else torch.device(generator_device)
        self.entries: list[_Entry] = []
        seen: set[int] = set()
        for name, param in named_params:
            if id(param) in seen:
                continue
            seen.add(id(param))
            self.entries.append(_Entry(name, param, not no_decay(name, param)))
        size = bucket_numel if bucket_numel is not None else chunk_numel
        # None: the default, planned for the devices (launch_bound) and re-planned when
        # launch_plan() switches; z is the same under both plans (stream "tensor").
        self._default_size = size is None
        # Every device a pass touches: the tensors' and their generators'.
        self._devices = {e.param.device for e in self.entries} | {
            self._draw_device(e.param) for e in self.entries
        }
        self._launch_bound = launch_bound(self._devices)
        if size is None:
            size = self._default_bucket_numel()
        if size < 16:
            raise ValueError(f"bucket_numel must be >= 16, got {size}")
        self.bucket_numel = size - size % 16
        self._build()
        self._kept_seed: int | None = None
        self.draws = 0  # passes that drew z from the generators, over this object's life

    def _default_bucket_numel(self) -> int:
        """ceil(numel / DEFAULT_BUCKETS), at least MIN_BUCKET_NUMEL; at most
        CPU_BUCKET_NUMEL for a stream-"tensor" SPSA on CPUs outside launch_plan()."""
        size = max(MIN_BUCKET_NUMEL, -(-self.numel // DEFAULT_BUCKETS))
        if self.stream == "tensor" and not self._launch_bound:
            size = min(size, CPU_BUCKET_NUMEL)
        return size + (-size % 16)

    def _replan(self) -> None:
        """Re-plan a default-sized SPSA whose plan launch_plan() switched."""
        if not self._default_size:
            return
        now = launch_bound(self._devices)
        if now == self._launch_bound:
            return
        self._launch_bound = now
        self.bucket_numel = self._default_bucket_numel()
        self._build()
        self._kept_seed = None

    def _build(self) -> None:
        """Plan the buckets; one generator per draw device; one buffer per (device,
        dtype), sized for the largest such bucket and reused by every pass."""
        params = [e.param for e in self.entries]
        draw = [self._draw_device(p) for p in params]
        self.buckets = plan_buckets(
            params,
            draw,
            self.bucket_numel,
            distribution=self.distribution,
            stream=self.stream,
        )
        self._generators: dict[torch.device, torch.Generator] = {}
        for device in draw:
            if device not in self._generators:
                self._generators[device] = torch.Generator(device=device)
        sizes: dict[tuple[torch.device, torch.dtype], int] = {}
        for b in self.buckets:
            for key in {(b.draw_device, b.dtype), (b.device, b.dtype)}:
                sizes[key] = max(sizes.get(key, 0), b.numel)
        self._buffers = {k: torch.empty(n, device=k[0], dtype=k[1]) for k, n in sizes.items()}
        self._sign_buffers: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        if self.distribution == "rademacher":
            for device in self._generators:
                size = max(s for (d, _), s in sizes.items() if d == device)
                words = torch.empty((size + 7) // 8, device=device, dtype=torch.uint8)
                bits = torch.empty(((size + 7) // 8, 8), device=device, dtype=torch.uint8)
                self._sign_buffers[device] = (words, bits)
            self._shifts = {
                d: torch.arange(8, device=d, dtype=torch.uint8) for d in self._generators
            }
        self._cpu_only = all(d.type == "cpu" for d in self._devices)
        self._kept: list[torch.Tensor] = []
        self._views: dict[tuple[int, int], _BucketViews] = {}
        self._segments: dict[tuple[int, int], list[torch.Tensor]] = {}
        self._ptrs: list[int] = []

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    @property
    def numel(self) -> int:
        return sum(e.param.numel() for e in self.entries)

    @property
    def num_buckets(self) -> int:
        """Buckets per pass: a default pass costs about this many foreach calls (two
        per bucket with weight decay in restore_and_update_) plus its draws (one per
        bucket on a CPU generator when every tensor's size is a multiple of 16, or with
        stream "bucket"; `num_draw_calls`). Constant in the number of tensors."""
        return len(self.buckets)

    @property
    def num_draw_calls(self) -> int:
        """Generator calls per pass that draws z (the segments of every bucket)."""
        return sum(len(b.segments) for b in self.buckets)

    def perturbation_seed(self, seed: int, i: int) -> int:
        """Seed of the i-th of q perturbations in a step with `seed` (i = 0 gives `seed`)."""
        return seed if i == 0 else derive_seed(seed, "direction", i)

    def _draw_device(self, param: torch.Tensor) -> torch.device:
        return self.generator_device if self.generator_device is not None else param.device

    def _seed_generators(self, seed: int) -> None:
        for k, generator in enumerate(self._generators.values()):
            seed_generator(generator, seed if k == 0 else derive_seed(seed, "device", k))

    def _draw(self, z: torch.Tensor, device: torch.device) -> None:
        """Fill z (a flat view of a buffer on `device`) with the next entries of the
        stream."""
        generator = self._generators[device]
        if self.distribution == "gaussian":
            z.normal_(generator=generator)
            return
        n = z.numel()
        words, bits = self._sign_buffers[device]
        w = words[: (n + 7) // 8].random_(0, 256, generator=generator)
        b = bits[: w.numel()]
        torch.bitwise_and(torch.bitwise_right_shift(w.unsqueeze(1), self._shifts[device]), 1, out=b)
        z.copy_(b.view(-1)[:n]).mul_(2).sub_(1)

    def _bucket_views(self, k: int, store: torch.Tensor) -> _BucketViews:
        """The targets and z views of bucket k over `store` (cached while the tensors
        keep their storage: built once, not per pass)."""
        key = (k, store.data_ptr())
        views = self._views.get(key)
        if views is None:
            views = _BucketViews.build(self.buckets[k], self.entries, store)
            views.kept = self.keep_z
            self._views[key] = views
        return views

    def _segment_views(self, k: int, src: torch.Tensor) -> list[torch.Tensor]:
        """Bucket k's draw segments as views of `src` (cached like _bucket_views)."""
        key = (k, src.data_ptr())
        views = self._segments.get(key)
        if views is None:
            views = [src[a:c] for a, c in self.buckets[k].segments]
            self._segments[key] = views
        return views

    def _check_storage(self) -> None:
        """Forget the cached views when a tensor was given new storage (e.g. .to())."""
        ptrs = [e.param.data_ptr() for e in self.entries]
        if ptrs != self._ptrs:
            self._views.clear()
            self._segments.clear()
            self._ptrs = ptrs

    def _iter_z(self, seed: int) -> Iterator[tuple[ZOBucket, _BucketViews]]:
        """Yield (bucket, views) per bucket, its z drawn (or kept, keep_z) and valid
        until the next yield (with keep_z, until release_z or another seed)."""
        self._replan()
        self._check_storage()
        reuse = self.keep_z and self._kept_seed == seed
        if not reuse:
            self.draws += 1
            self._seed_generators(seed)
        if self.keep_z and not self._kept:
            self._kept = [
                torch.empty(b.numel, device=b.device, dtype=b.dtype) for b in self.buckets
            ]
        for k, b in enumerate(self.buckets):
            store = self._kept[k] if self.keep_z else self._buffers[(b.device, b.dtype)]
            if not reuse:
                src = (
                    store if b.draw_device == b.device else self._buffers[(b.draw_device, b.dtype)]
                )
                for z in self._segment_views(k, src):
                    self._draw(z, b.draw_device)
                if src is not store:
                    store[: b.numel].copy_(src[: b.numel])
            yield b, self._bucket_views(k, store)
        if self.keep_z:
            self._kept_seed = seed

    def tensor_z(self, seed: int) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        """Yield (name, tensor, z) for each tensor in order, z(seed) for that tensor.

        z is a new tensor shaped like the parameter (the caller may keep it, scale it in
        place or hand it to an optimizer as a gradient), drawn with the same numbers
        perturb_ and restore_and_update_ use for `seed`: one pass over the generators, a
        draw counted in `draws`. Peak memory is one tensor's z at a time, not a copy of
        the whole set: e.g. ZO-Adam sets one tensor's gradient g z, steps it and frees it
        before the next. The z of a tensor is only complete when it is yielded, so work
        per tensor happens between yields (with single_thread, on one intra-op thread).
        """
        current = -1
        z_full = torch.empty(0)
        with self._pass_threads():
            for bucket, views in self._iter_z(seed):
                for piece, z in zip(bucket.pieces, views.zs, strict=True):
                    entry = self.entries[piece.entry]
                    if piece.entry != current:
                        current, z_full = piece.entry, torch.empty_like(entry.param)
                    z_full.view(-1)[piece.start : piece.stop].copy_(z.reshape(-1))
                    if piece.stop == entry.param.numel():
                        yield entry.name, entry.param, z_full

    def release_z(self) -> None:
        """Free the kept z (keep_z); the next pass draws again."""
        self._kept_seed = None
        self._kept = []
        self._views = {k: v for k, v in self._views.items() if not v.kept}
        if self.keep_z:  # the kept buffers were the draws' targets too
            self._segments.clear()

    @contextmanager
    def _pass_threads(self) -> Iterator[None]:
        with single_intra_op_thread(self.single_thread and self._cpu_only):
            yield

    @torch.no_grad()
    def perturb_(self, seed: int, scale: float) -> None:
        """In place: theta += scale * eps * z(seed), one foreach add per bucket."""
        alpha = scale * self.config.eps
        with self._pass_threads():
            for _, views in self._iter_z(seed):
                torch._foreach_add_(views.targets, views.zs, alpha=alpha)

    @torch.no_grad()
    def restore_and_update_(
        self,
        seed: int,
        projected_grad: float,
        lr: float,
        *,
        restore_scale: float = 1.0,
        apply_weight_decay: bool = True,
    ) -> None:
        """Undo the last perturbation and apply the SPSA update, with z drawn once.

        With theta0 = theta + restore_scale * eps * z (the unperturbed point), sets
        theta = theta0 - lr * (projected_grad * z + wd * theta0), with wd = 0 for no-decay
        tensors. restore_scale=0 applies an update to unperturbed parameters (-1 undoes a
        +eps z perturbation); apply_weight_decay=False leaves decay out (used to decay
        once when q > 1). Per bucket one foreach add, or with decay a foreach mul and
        add on the decayed tensors and an add on the others: per element the same
        operations as (1 - lr wd)(theta + restore z) - lr g z in two in-place steps.
        """
        wd = self.config.weight_decay if apply_weight_decay else 0.0
        restore = restore_scale * self.config.eps
        with self._pass_threads():
            for _, v in self._iter_z(seed):
                if wd == 0.0:
                    torch._foreach_add_(v.targets, v.zs, alpha=restore - lr * projected_grad)
                    continue
                keep = 1.0 - lr * wd
                if v.decay_targets:
                    torch._foreach_mul_(v.decay_targets, keep)
                    alpha = keep * restore - lr * projected_grad
                    torch._foreach_add_(v.decay_targets, v.decay_zs, alpha=alpha)
                if v.plain_targets:
                    torch._foreach_add_(
                        v.plain_targets, v.plain_zs, alpha=restore - lr * projected_grad
                    )

    @torch.no_grad()
    def perturb_along_(self, terms: Sequence[tuple[int, float]], scale: float) -> None:
        """In place: theta += scale * eps * u, with u = sum_i c_i z(s_i) over `terms`
        ((s_i, c_i) pairs): one pass per term, nothing stored. A single term (s, 1.0) is
        perturb_(s, scale), the same floating-point operations."""
        for s, c in terms:
            self.perturb_(s, scale * c)

    @torch.no_grad()
    def restore_and_update_along_(
        self,
        terms: Sequence[tuple[int, float]],
        projected_grad: float,
        lr: float,
        *,
        restore_scale: float = 1.0,
    ) -> None:
        """restore_and_update_ along u = sum_i c_i z(s_i): with theta0 = theta +
        restore_scale * eps * u, sets theta = theta0 - lr * (projected_grad * u + wd *
        theta0), decay once (not on no-decay tensors). One pass per term when weight
        decay is 0 (each term's restore fused with its update); with decay and several
        terms, the restores run first (one more pass per term) so that the decay acts
        on theta0 exactly. A single term (s, 1.0) is restore_and_update_(s, g, lr,
        restore_scale=r): the same floating-point operations as SPSA.step's q = 1 update.
        """
        if len(terms) == 1:
            s, c = terms[0]
            self.restore_and_update_(s, projected_grad * c, lr, restore_scale=restore_scale * c)
            return
        if self.config.weight_decay == 0.0:
            for s, c in terms:
                self.restore_and_update_(
                    s,
                    projected_grad * c,
                    lr,
                    restore_scale=restore_scale * c,
                    apply_weight_decay=False,
                )
            return
        for s, c in terms:
            self.perturb_(s, restore_scale * c)
        for i, (s, c) in enumerate(terms):
            self.restore_and_update_(
                s, projected_grad * c, lr, restore_scale=0.0, apply_weight_decay=i == 0
            )

    @torch.no_grad()
    def probe(
        self, loss_fn: Callable[[], torch.Tensor | float], seed: int, *, restore: bool = True
    ) -> SPSAProbe:
        """The two-point SPSA estimate along z(seed): theta += eps z, L+ = loss_fn(),
        theta -= 2 eps z, L- = loss_fn(), then theta += eps z (restore), three passes.

        restore=False leaves theta at theta - eps z, for a caller that fuses the restore
        with its update (restore_and_update_(seed, ..., restore_scale=1.0), as step()
        does): two passes instead of three. The estimate is two-sided whatever
        config.estimator says; the projected gradient is (L+ - L-) / (2 eps).
        """
        self.perturb_(seed, 1.0)
        loss_plus = float(loss_fn())
        self.perturb_(seed, -2.0)
        loss_minus = float(loss_fn())
        if restore:
            self.perturb_(seed, 1.0)
        return SPSAProbe(loss_plus, loss_minus, (loss_plus - loss_minus) / (2 * self.config.eps))

    @torch.no_grad()
    def step(
        self,
        loss_fn: Callable[[], torch.Tensor | float],
        lr: float,
        seed: int,
        *,
        loss_at_theta: float | None = None,
    ) -> SPSAStepResult:
        """One SPSA step: estimate along q seeded directions, then update in place.

        With q > 1 every direction is probed at the same theta (each restored right after
        its probe), and the update is the average theta -= lr (mean_i g_i z_i + wd theta):
        the last direction's restore is fused with its update, the others cost one more
        pass each (4q - 1 draws of z in all two-sided, 3 for q = 1; 3q - 1 one-sided).

        loss_at_theta: one-sided only, L(theta) if the caller has it (it saves a
        forward); otherwise it is computed.
        """
        if self.config.estimator == "one-sided":
            return self._step_one_sided(loss_fn, lr, seed, loss_at_theta)
        if loss_at_theta is not None:
            raise ValueError("loss_at_theta is for the one-sided estimator")
        q = self.config.q
        draws = self.draws
        seeds = [self.perturbation_seed(seed, i) for i in range(q)]
        grads: list[float] = []
        losses: list[float] = []
        for i, s in enumerate(seeds):
            probe = self.probe(loss_fn, s, restore=i < q - 1)
            grads.append(probe.projected_grad)
            losses.append(probe.loss)
        self._update(seeds, grads, lr, restore_scale=1.0)
        return SPSAStepResult(
            loss=sum(losses) / q,
            projected_grads=grads,
            forward_passes=2 * q,
            z_draws=self.draws - draws,
        )

    def _update(
        self, seeds: list[int], grads: list[float], lr: float, *, restore_scale: float
    ) -> None:
        """The last perturbation is still applied: restore it and update (with decay) at
        once; then the other directions' updates, without decay."""
        q = len(seeds)
        self.restore_and_update_(seeds[-1], grads[-1] / q, lr, restore_scale=restore_scale)
        for s, g in zip(seeds[:-1], grads[:-1], strict=True):
            self.restore_and_update_(s, g / q, lr, restore_scale=0.0, apply_weight_decay=False)

    def _step_one_sided(
        self,
        loss_fn: Callable[[], torch.Tensor | float],
        lr: float,
        seed: int,
        loss_at_theta: float | None,
    ) -> SPSAStepResult:
        q, eps = self.config.q, self.config.eps
        draws = self.draws
        forward = 0
        if loss_at_theta is None:
            loss_at_theta = float(loss_fn())
            forward += 1
        seeds = [self.perturbation_seed(seed, i) for i in range(q)]
        grads: list[float] = []
        for i, s in enumerate(seeds):
            self.perturb_(s, 1.0)
            grads.append((float(loss_fn()) - loss_at_theta) / eps)
            forward += 1
            if i < q - 1:
                self.perturb_(s, -1.0)
        self._update(seeds, grads, lr, restore_scale=-1.0)
        return SPSAStepResult(
            loss=loss_at_theta,
            projected_grads=grads,
            forward_passes=forward,
            z_draws=self.draws - draws,
        )

    @torch.no_grad()
    def estimate(self, loss_fn: Callable[[], torch.Tensor | float], seed: int) -> list[float]:
        """The q projected gradients of a step with `seed`; parameters are restored."""
        grads = []
        eps = self.config.eps
        one_sided = self.config.estimator == "one-sided"
        loss0 = float(loss_fn()) if one_sided else 0.0
        for i in range(self.config.q):
            s = self.perturbation_seed(seed, i)
            if one_sided:
                self.perturb_(s, 1.0)
                grads.append((float(loss_fn()) - loss0) / eps)
                self.perturb_(s, -1.0)
                continue
            grads.append(self.probe(loss_fn, s).projected_grad)
        return grads


class ScheduledRate(Protocol):
    """A method config with a learning rate on hizfo.schedule's schedule."""

    lr: float
    schedule: str
    warmup_steps: int


class RunContext(Protocol):
    """What ZOPrologue.for_run reads of a run's context (bench's TrainContext has it)."""

    total_steps: int | None
    seed: int


class ZOPrologue:
    """The prologue every seeded-SPSA method shares (mezo, zo-adam, zo-sgd-momentum,
    zo-signsgd), as one object.

    At set-up: the model gets no autograd ever (requires_grad off, so a ZO method needs
    inference memory only) and eval mode (dropout off, so L+ and L- see the same
    function), and an SPSA over model.named_parameters() (a tied tensor once; this order
    defines z). At each step, `step_args(step)` gives the step's learning rate (rate.lr
    on rate.schedule, hizfo.schedule, the schedule of every method) and its SPSA seed,
    derive_seed(seed, step): the seed `mezo` uses at that step.

    Args:
        model: the model, frozen and put in eval mode here.
        config: the SPSA's settings.
        rate: the method's config (lr, schedule, warmup_steps).
        total_steps: the run's steps (the "linear" and "cosine" schedules need it).
        seed: the trial's base seed.
        spsa_options: SPSA's keyword arguments (keep_z, distribution, stream, ...).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: SPSAConfig,
        rate: ScheduledRate,
        *,
        total_steps: int | None,
        seed: int,
        **spsa_options: Any,
    ) -> None:
        model.requires_grad_(False)
        model.eval()
        self.model = model
        self.rate = rate
        self.total_steps = total_steps
        self.seed = seed
        self.named = list(model.named_parameters())
        self.spsa = SPSA(self.named, config, **spsa_options)

    @classmethod
    def for_run(
        cls,
        model: torch.nn.Module,
        run: RunContext,
        rate: ScheduledRate,
        config: SPSAConfig,
        **spsa_options: Any,
    ) -> ZOPrologue:
        """The prologue of a run whose context (a bench TrainContext, say) gives
        total_steps and the base seed."""
        return cls(model, config, rate, total_steps=run.total_steps, seed=run.seed, **spsa_options)

    def step_args(self, step: int) -> tuple[float, int]:
        """(learning rate, SPSA seed) of 0-based `step`."""
        r = self.rate
        lr = scheduled_lr(r.lr, step, self.total_steps, r.schedule, r.warmup_steps)
        return lr, derive_seed(self.seed, step)

    @property
    def parameters(self) -> list[torch.Tensor]:
        """The trained tensors, a tied one once (the SPSA's order)."""
        return [e.param for e in self.spsa.entries]

    def summary(self) -> dict[str, int]:
        """The parameter counts every ZO method reports: all of them are ZO."""
        return {"trainable_parameters": self.spsa.numel, "zo_parameters": self.spsa.numel}


# --- MeZO-GV and MeZO-Greedy: a pool of candidate perturbations per step -------------
#
# Jin, Cen and Tan, "Steering the Noise: Turning Random Perturbations into Effective
# Descent for Memory-Efficient LLM Fine-Tuning", arXiv 2601.04710 v2 (June 2026). Only
# its abstract and front matter could be read here, not its method section, so no
# section or equation number of the paper is cited below. What the abstract states: draw
# a small pool of candidate perturbations, evaluate their losses, then either form a
# guiding vector from the contrast between the low-loss and the high-loss group (MeZO-GV)
# or keep the single best perturbation within a fixed evaluation budget (MeZO-Greedy).
# The rest follows the authors' public code (github.com/stan-anony/MeZO-GV,
# large_models/trainer_fwa_mem_eff.py: _compute_mgfwa_fitness, zo_perturb_parameters,
# zo_update), read but not copied:
#   - candidate i is scored by the one-sided loss L(theta + eps z_i) on the step's batch,
#     each z_i regenerated from its seed (perturb, forward, restore);
#   - the candidates are sorted by that loss; the first floor(alpha M) are the elite, the
#     rest the other group; u = mean(elite z) - mean(other z) (the code's split_ratio 0.5
#     and pool of 2: u = z_best - z_worst), never normalised;
#   - MeZO's two-point step is then taken along u: g = (L(theta + eps u) -
#     L(theta - eps u)) / (2 eps), theta -= lr (g u + wd theta), u rebuilt from the seeds
#     in every pass (the code's memory-efficient trainer).
# Our choices where neither source says: at least one elite (M = 1 has no other group,
# and u = z_1); a pool of one evaluates nothing (no ranking to make), so both methods
# are MeZO exactly there; ties keep the lower index; Greedy steps along the best z with
# the same two-point step. See docs/methods.md ("MeZO-GV and MeZO-Greedy").


@dataclass
class GuidedConfig:
    """Settings of a pool-guided SPSA step (GuidedSPSA).

    Attributes:
        method: "gv" (MeZO-GV: step along the elite-minus-rest contrast) or "greedy"
            (MeZO-Greedy: step along the best candidate).
        candidates: M, the pool of perturbations evaluated per step (MeZO-Greedy's
            evaluation budget). Each costs one forward when M > 1; M = 1 evaluates
            nothing and is MeZO. Default 4 (ours; the authors' public code uses 2, at
            which MeZO-GV's direction is, for a noiseless loss, distributed as sqrt(2) z:
            see docs/methods.md).
        elite_fraction: alpha, the share of the pool in the elite group (MeZO-GV):
            floor(alpha M) candidates, at least one. 0.5, the authors' code's split_ratio.
        normalize: MeZO-GV: scale u by 1 / sqrt(1/k + 1/(M - k)) (k elites), so that its
            entries have unit variance as a single z's do and a learning rate means the
            same step size as MeZO's. False (the authors' code: u as it is).
        keep_direction: MeZO-GV: build u once per step and keep it (one more copy of
            the perturbed tensors) instead of regenerating it from the M seeds in each
            of its three passes (3M draws of z -> M). False: the seed trick.
    """

    method: str = "gv"
    candidates: int = 4
    elite_fraction: float = 0.5
    normalize: bool = False
    keep_direction: bool = False

    def __post_init__(self) -> None:
        if self.method not in GUIDED_ESTIMATORS:
            raise ValueError(
                f"GuidedConfig.method must be one of {', '.join(GUIDED_ESTIMATORS)}, "
                f"got {self.method!r}"
            )
        if isinstance(self.candidates, bool) or int(self.candidates) != self.candidates:
            raise ValueError(f"GuidedConfig.candidates must be an int, got {self.candidates!r}")
        if self.candidates < 1:
            raise ValueError(f"GuidedConfig.candidates must be >= 1, got {self.candidates}")
        if not 0.0 < self.elite_fraction < 1.0:
            raise ValueError(
                f"GuidedConfig.elite_fraction must be in (0, 1), got {self.elite_fraction}"
            )

    @property
    def forward_passes(self) -> int:
        """Forwards of one step: M candidates (none when M = 1) plus the two-point probe."""
        return (self.candidates if self.candidates > 1 else 0) + 2


@dataclass
class GuidedStepResult:
    """What one GuidedSPSA step measured.

    Attributes:
        loss: (L(theta + eps u) + L(theta - eps u)) / 2, as MeZO reports for a step.
        projected_grads: [g], g = (L(theta + eps u) - L(theta - eps u)) / (2 eps).
        forward_passes: M + 2 (2 when M = 1).
        z_draws: passes over the perturbed tensors that drew a z.
        candidate_losses: L(theta + eps z_i) of the pool (empty when M = 1).
        terms: u as (seed, coefficient) pairs: u = sum_i c_i z(s_i).
    """

    loss: float
    projected_grads: list[float]
    forward_passes: int
    z_draws: int
    candidate_losses: list[float] = field(default_factory=list)
    terms: list[tuple[int, float]] = field(default_factory=list)


def elite_count(candidates: int, elite_fraction: float) -> int:
    """k = floor(alpha M), at least 1 (M = 1 has only the elite)."""
    return max(1, math.floor(elite_fraction * candidates))


def guiding_terms(
    seeds: Sequence[int],
    losses: Sequence[float],
    elite_fraction: float,
    *,
    normalize: bool = False,
) -> list[tuple[int, float]]:
    """MeZO-GV's guiding vector as (seed, coefficient) pairs: +1/k for the k lowest
    losses (the elite), -1/(M - k) for the rest, so u = mean(elite z) - mean(rest z);
    ties keep the lower index first. With `normalize`, every coefficient is scaled by
    1 / sqrt(1/k + 1/(M - k)) (1/sqrt(1/k) when the rest is empty), the inverse of one
    entry's standard deviation for independent z. M = 1 gives [(s_1, 1.0)]."""
    m = len(seeds)
    if m != len(losses) or m == 0:
        raise ValueError(f"need one loss per seed, got {m} seeds and {len(losses)} losses")
    order = sorted(range(m), key=lambda i: (losses[i], i))
    k = elite_count(m, elite_fraction)
    rest = m - k
    scale = 1.0
    if normalize:
        scale = 1.0 / math.sqrt(1.0 / k + (1.0 / rest if rest else 0.0))
    coef = {i: scale / k for i in order[:k]}
    coef.update({i: -scale / rest for i in order[k:]})
    return [(seeds[i], coef[i]) for i in range(m)]


def greedy_terms(seeds: Sequence[int], losses: Sequence[float]) -> list[tuple[int, float]]:
    """MeZO-Greedy's direction: the candidate of lowest loss (the lower index on a tie)."""
    if len(seeds) != len(losses) or not seeds:
        raise ValueError(f"need one loss per seed, got {len(seeds)} and {len(losses)}")
    best = min(range(len(seeds)), key=lambda i: (losses[i], i))
    return [(seeds[best], 1.0)]


class GuidedSPSA:
    """MeZO-GV and MeZO-Greedy on an SPSA's tensors, generator and seed trick.

    One step with seed s (candidate i's seed is spsa.perturbation_seed(s, i), so
    candidate 0's z is the z a MeZO step with seed s draws):

        for i < M: theta += eps z_i; l_i = L(theta); theta -= eps z_i     # M forwards
        u = guiding_terms(...) (gv) or greedy_terms(...) (greedy)         # seeds only
        theta += eps u; L+ = L(theta); theta -= 2 eps u; L- = L(theta)    # 2 forwards
        g = (L+ - L-) / (2 eps); theta += eps u; theta -= lr (g u + wd theta)

    With M = 1 nothing is evaluated and the step is SPSA.step's with q = 1, the same
    floating-point operations (MeZO bit for bit).

    Memory: by default u is never stored; every pass over the weights regenerates it
    from its seeds (one z per term in the reused buffer), so the state is M (seed,
    coefficient) pairs, as MeZO's is one seed. z draws per step: 2M for the candidates,
    then M per pass along u (3 passes; 4 with weight decay and M > 1): 5M in all for
    MeZO-GV (3 when M = 1), 2M + 3 for MeZO-Greedy. keep_direction (MeZO-GV) keeps u
    as one more copy of the perturbed tensors for the step: 2M + M draws.
    """

    def __init__(self, spsa: SPSA, config: GuidedConfig) -> None:
        if spsa.config.q != 1 or spsa.config.estimator != "two-sided":
            raise ValueError("GuidedSPSA needs an SPSA with q = 1 and the two-sided estimator")
        self.spsa = spsa
        self.config = config

    def candidate_seeds(self, seed: int) -> list[int]:
        """The seeds of the step's pool (the first is `seed` itself)."""
        return [self.spsa.perturbation_seed(seed, i) for i in range(self.config.candidates)]

    @torch.no_grad()
    def evaluate(
        self, loss_fn: Callable[[], torch.Tensor | float], seeds: Sequence[int]
    ) -> list[float]:
        """L(theta + eps z(s)) for each seed, theta restored after each (2 passes each)."""
        losses = []
        for s in seeds:
            self.spsa.perturb_(s, 1.0)
            losses.append(float(loss_fn()))
            self.spsa.perturb_(s, -1.0)
        return losses

    def terms(self, seeds: Sequence[int], losses: Sequence[float]) -> list[tuple[int, float]]:
        """The step's direction from the pool's losses."""
        c = self.config
        if c.method == "greedy":
            return greedy_terms(seeds, losses)
        return guiding_terms(seeds, losses, c.elite_fraction, normalize=c.normalize)

    @torch.no_grad()
    def step(
        self, loss_fn: Callable[[], torch.Tensor | float], lr: float, seed: int
    ) -> GuidedStepResult:
        """One step (see the class docstring); parameters updated in place."""
        spsa = self.spsa
        draws = spsa.draws
        seeds = self.candidate_seeds(seed)
        losses: list[float] = []
        if len(seeds) > 1:
            losses = self.evaluate(loss_fn, seeds)
            terms = self.terms(seeds, losses)
        else:
            terms = [(seeds[0], 1.0)]
        eps = spsa.config.eps
        if self.config.keep_direction and len(terms) > 1:
            loss_plus, loss_minus, g = self._probe_and_update_kept(loss_fn, terms, lr)
        else:
            spsa.perturb_along_(terms, 1.0)
            loss_plus = float(loss_fn())
            spsa.perturb_along_(terms, -2.0)
            loss_minus = float(loss_fn())
            g = (loss_plus - loss_minus) / (2 * eps)
            spsa.restore_and_update_along_(terms, g, lr, restore_scale=1.0)
        return GuidedStepResult(
            loss=(loss_plus + loss_minus) / 2,
            projected_grads=[g],
            forward_passes=len(losses) + 2,
            z_draws=spsa.draws - draws,
            candidate_losses=losses,
            terms=terms,
        )

    def _probe_and_update_kept(
        self,
        loss_fn: Callable[[], torch.Tensor | float],
        terms: Sequence[tuple[int, float]],
        lr: float,
    ) -> tuple[float, float, float]:
        """The two-point step along u built once and kept (keep_direction): one copy of
        the perturbed tensors, freed at the end of the step."""
        spsa = self.spsa
        eps, wd = spsa.config.eps, spsa.config.weight_decay
        u: list[torch.Tensor] = [torch.zeros_like(e.param) for e in spsa.entries]
        for s, c in terms:
            for k, (_, _, z) in enumerate(spsa.tensor_z(s)):
                u[k].add_(z, alpha=c)
        with spsa._pass_threads():
            for e, v in zip(spsa.entries, u, strict=True):
                e.param.add_(v, alpha=eps)
        loss_plus = float(loss_fn())
        with spsa._pass_threads():
            for e, v in zip(spsa.entries, u, strict=True):
                e.param.add_(v, alpha=-2 * eps)
        loss_minus = float(loss_fn())
        g = (loss_plus - loss_minus) / (2 * eps)
        with spsa._pass_threads():
            for e, v in zip(spsa.entries, u, strict=True):
                if e.decay and wd != 0.0:
                    keep = 1.0 - lr * wd
                    e.param.mul_(keep).add_(v, alpha=keep * eps - lr * g)
                else:
                    e.param.add_(v, alpha=eps - lr * g)
        return loss_plus, loss_minus, g


@dataclass
class _BucketViews:
    """Views of one bucket: the pieces of the tensors (targets) and of the z buffer
    (zs), all of them and split by weight decay, for the foreach calls of a pass."""

    targets: list[torch.Tensor]
    zs: list[torch.Tensor]
    decay_targets: list[torch.Tensor]
    decay_zs: list[torch.Tensor]
    plain_targets: list[torch.Tensor]
    plain_zs: list[torch.Tensor]
    kept: bool = False

    @classmethod
    def build(
        cls, bucket: ZOBucket, entries: Sequence[_Entry], store: torch.Tensor
    ) -> _BucketViews:
        views = cls([], [], [], [], [], [])
        for piece in bucket.pieces:
            entry = entries[piece.entry]
            p = entry.param.detach()
            n = piece.stop - piece.start
            z = store[piece.offset : piece.offset + n]
            if n == p.numel():
                target, z = p, z.view(p.shape)
            else:
                target = p.view(-1)[piece.start : piece.stop]
            views.targets.append(target)
            views.zs.append(z)
            (views.decay_targets if entry.decay else views.plain_targets).append(target)
            (views.decay_zs if entry.decay else views.plain_zs).append(z)
        return views
