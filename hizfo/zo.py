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
of one more copy of the perturbed tensors). Each draw goes tensor by tensor into one
reused buffer (per device and dtype) through this object's own torch.Generator, so no z
is allocated per step and torch's global RNG state is never touched. Drawing normals is
the expensive part on a CPU, which is why every pass matters (docs/performance.md).

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
- a tensor is drawn in chunks of `chunk_numel` elements, so the buffer is a few MiB
  instead of the largest tensor (113 MiB for SmolLM2-135M's embedding). torch's CPU
  normal_ consumes its generator element by element and transforms blocks of 16, so a
  tensor drawn in chunks whose lengths are multiples of 16 (the last one at least 16
  long) gets exactly the numbers one whole-tensor draw would give: z is unchanged.
  Rademacher draws take one byte (8 signs) per generator call, so any chunking into
  multiples of 8 leaves them unchanged too.
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

import torch

_MASK64 = (1 << 64) - 1
_MASK32 = (1 << 32) - 1
# Elements per CPU draw: 1 MiB of float32, small enough to stay in cache between the
# draw and the add, large enough that the per-op overhead (~500 ops per pass for a 135M
# model) is a rounding error. A multiple of 16, which keeps z chunking-invariant.
DEFAULT_CHUNK_NUMEL = 1 << 18
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
    kept: torch.Tensor | None = field(default=None, repr=False)


class SPSA:
    """Seeded SPSA over a fixed, ordered set of tensors, updated in place.

    z for a seed is defined as: seed this object's generator for each device (the first
    device with `seed`, later ones with derive_seed(seed, "device", k)) through
    seed_generator (all 64 bits), then for each tensor, in the order given, draw `numel`
    entries from its device's generator: standard normals, or for "rademacher" one
    uniform byte per 8 entries whose bits, lowest first, give the signs (bit 1 -> +1).
    Tensors repeated in `named_params` (tied weights) are kept once.

    Args:
        named_params: (name, tensor) pairs to perturb and update, e.g.
            model.named_parameters().
        config: eps, q, weight decay and estimator.
        no_decay: predicate for tensors exempt from weight decay.
        generator_device: None (default) draws z on each tensor's own device, the fast
            path. A device (e.g. "cpu") draws every z there and copies it over, which gives
            the same z on any hardware (CPU and CUDA generators produce different
            streams) at the price of a copy per tensor.
        chunk_numel: on a CPU generator, contiguous tensors are drawn in chunks of this
            many elements (a multiple of 16, rounded down), which bounds the buffer
            without changing z (see the module docstring). CUDA draws are whole-tensor:
            chunking would change the Philox stream, and memory there is left as it was.
        single_thread: run each CPU pass with one intra-op thread (restored after).
        keep_z: keep the z of the current seed in memory (one more copy of the perturbed
            tensors), so a step draws it once instead of three times; the numbers are
            those of the default path, so updates agree to rounding. Default False: the
            seed trick's point is to store nothing.
        distribution: "gaussian" (default, MeZO) or "rademacher" (+-1 entries, cheaper to
            draw; E[z z^T] = I still holds, so the estimate stays unbiased for smooth
            losses; docs/hizfo.md).
    """

    def __init__(
        self,
        named_params: Iterable[tuple[str, torch.Tensor]],
        config: SPSAConfig,
        *,
        no_decay: Callable[[str, torch.Tensor], bool] = default_no_decay,
        generator_device: torch.device | str | None = None,
        chunk_numel: int = DEFAULT_CHUNK_NUMEL,
        single_thread: bool = True,
        keep_z: bool = False,
        distribution: str = "gaussian",
    ) -> None:
        if chunk_numel < 16:
            raise ValueError(f"chunk_numel must be >= 16, got {chunk_numel}")
        if distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}"
            )
        self.config = config
        self.chunk_numel = chunk_numel - chunk_numel % 16
        self.single_thread = single_thread
        self.keep_z = keep_z
        self.distribution = distribution
        self.generator_device = None if generator_device is None else torch.device(generator_device)
        self.entries: list[_Entry] = []
        seen: set[int] = set()
        for name, param in named_params:
            if id(param) in seen:
                continue
            seen.add(id(param))
            self.entries.append(_Entry(name, param, not no_decay(name, param)))

        # One generator per device, seeded at the start of every pass; one buffer per
        # (device, dtype), sized for the largest such tensor and reused by every pass.
        self._generators: dict[torch.device, torch.Generator] = {}
        self._buffers: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        self._sign_buffers: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        sizes: dict[tuple[torch.device, torch.dtype], int] = {}
        for entry in self.entries:
            device = self._draw_device(entry.param)
            if device not in self._generators:
                self._generators[device] = torch.Generator(device=device)
            key = (device, entry.param.dtype)
            largest = max(stop - start for start, stop in self._chunks(entry.param))
            sizes[key] = max(sizes.get(key, 0), largest)
        for (device, dtype), size in sizes.items():
            self._buffers[(device, dtype)] = torch.empty(size, device=device, dtype=dtype)
        if distribution == "rademacher":
            for device in self._generators:
                size = max(s for (d, _), s in sizes.items() if d == device)
                words = torch.empty((size + 7) // 8, device=device, dtype=torch.uint8)
                bits = torch.empty(((size + 7) // 8, 8), device=device, dtype=torch.uint8)
                self._sign_buffers[device] = (words, bits)
            self._shifts = {
                d: torch.arange(8, device=d, dtype=torch.uint8) for d in self._generators
            }
        self._cpu_only = all(
            e.param.device.type == "cpu" and self._draw_device(e.param).type == "cpu"
            for e in self.entries
        )
        self._kept_seed: int | None = None
        self.draws = 0  # passes that drew z from the generators, over this object's life

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    @property
    def numel(self) -> int:
        return sum(e.param.numel() for e in self.entries)

    def perturbation_seed(self, seed: int, i: int) -> int:
        """Seed of the i-th of q perturbations in a step with `seed` (i = 0 gives `seed`)."""
        return seed if i == 0 else derive_seed(seed, "direction", i)

    def _draw_device(self, param: torch.Tensor) -> torch.device:
        return self.generator_device if self.generator_device is not None else param.device

    def _seed_generators(self, seed: int) -> None:
        for k, generator in enumerate(self._generators.values()):
            seed_generator(generator, seed if k == 0 else derive_seed(seed, "device", k))

    def _chunks(self, param: torch.Tensor) -> list[tuple[int, int]]:
        """[start, stop) ranges of the flattened tensor drawn one at a time.

        Chunks are multiples of 16 long and the last is at least 16 long, the condition
        under which torch's CPU normal_ gives the same numbers as one whole draw.
        """
        n = param.numel()
        chunk = self.chunk_numel
        if self._draw_device(param).type != "cpu" or not param.is_contiguous() or n <= chunk:
            return [(0, n)]
        ranges = [(start, min(start + chunk, n)) for start in range(0, n, chunk)]
        (a, b), (_, d) = ranges[-2], ranges[-1]
        if d - b < 16:
            ranges[-2:] = [(a, b - 16), (b - 16, d)]
        return ranges

    def _draw(self, z: torch.Tensor, device: torch.device) -> None:
        """Fill z (a view of a buffer on `device`) with the next entries of the stream."""
        generator = self._generators[device]
        if self.distribution == "gaussian":
            z.normal_(generator=generator)
            return
        n = z.numel()
        words, bits = self._sign_buffers[device]
        w = words[: (n + 7) // 8].random_(0, 256, generator=generator)
        b = bits[: w.numel()]
        torch.bitwise_and(torch.bitwise_right_shift(w.unsqueeze(1), self._shifts[device]), 1, out=b)
        z.view(-1).copy_(b.view(-1)[:n]).mul_(2).sub_(1)

    def _iter_z(self, seed: int) -> Iterable[tuple[_Entry, torch.Tensor, torch.Tensor]]:
        """Yield (entry, target, z): target is the part of entry.param that z belongs to.

        z is a view of the reused buffer, valid until the next yield, or with keep_z a
        view of the kept copy (drawn on the first pass for this seed)."""
        if self.keep_z and self._kept_seed == seed:
            for entry in self.entries:
                assert entry.kept is not None
                yield entry, entry.param, entry.kept
            return
        self.draws += 1
        self._seed_generators(seed)
        for entry in self.entries:
            p = entry.param
            device = self._draw_device(p)
            buffer = self._buffers[(device, p.dtype)]
            ranges = self._chunks(p)
            flat = p.view(-1) if len(ranges) > 1 else None
            if self.keep_z and entry.kept is None:
                entry.kept = torch.empty_like(p)
            for start, stop in ranges:
                if flat is None:
                    target, z = p, buffer[: p.numel()].view(p.shape)
                else:
                    target, z = flat[start:stop], buffer[: stop - start]
                self._draw(z, device)
                if device != p.device:
                    z = z.to(p.device)
                if self.keep_z:
                    assert entry.kept is not None
                    kept = entry.kept if flat is None else entry.kept.view(-1)[start:stop]
                    z = kept.copy_(z)
                yield entry, target, z
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
        current: _Entry | None = None
        z_full = torch.empty(0)
        offset = 0
        with self._pass_threads():
            for entry, _, z in self._iter_z(seed):
                if entry is not current:
                    if current is not None:
                        yield current.name, current.param, z_full
                    current, offset = entry, 0
                    z_full = torch.empty_like(entry.param)
                n = z.numel()
                z_full.view(-1)[offset : offset + n].copy_(z.reshape(-1))
                offset += n
            if current is not None:
                yield current.name, current.param, z_full

    def release_z(self) -> None:
        """Free the kept z (keep_z); the next pass draws again."""
        self._kept_seed = None
        for entry in self.entries:
            entry.kept = None

    @contextmanager
    def _pass_threads(self) -> Iterator[None]:
        with single_intra_op_thread(self.single_thread and self._cpu_only):
            yield

    @torch.no_grad()
    def perturb_(self, seed: int, scale: float) -> None:
        """In place: theta += scale * eps * z(seed)."""
        alpha = scale * self.config.eps
        with self._pass_threads():
            for _, target, z in self._iter_z(seed):
                target.add_(z, alpha=alpha)

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
        once when q > 1).
        """
        wd = self.config.weight_decay if apply_weight_decay else 0.0
        restore = restore_scale * self.config.eps
        with self._pass_threads():
            for entry, target, z in self._iter_z(seed):
                if entry.decay and wd != 0.0:
                    # (1 - lr wd)(theta + restore z) - lr g z, as two in-place ops.
                    keep = 1.0 - lr * wd
                    target.mul_(keep).add_(z, alpha=keep * restore - lr * projected_grad)
                else:
                    target.add_(z, alpha=restore - lr * projected_grad)

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
