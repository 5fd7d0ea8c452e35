"""Two-point SPSA with MeZO's seed trick, shared by the MeZO baseline and Hi-ZFO.

One step with q = 1 (Malladi et al., 2023, arXiv 2305.17333):

    theta += eps z;  L+ = L(theta)
    theta -= 2 eps z; L- = L(theta)
    g = (L+ - L-) / (2 eps)                        # the projected gradient
    theta += eps z;  theta -= lr (g z + wd theta)   # restore, then update

z ~ N(0, I) is never stored: it is regenerated from a seed each time it is needed. Naive
MeZO draws z four times per step; here the restore and the update are one fused pass, so
z is drawn three times. Each draw goes tensor by tensor into one reused buffer (per device
and dtype) through this object's own torch.Generator, so no z is allocated per step and
torch's global RNG state is never touched. Drawing normals is the expensive part on a CPU
(DESIGN.md section 6), which is why every pass matters.

On a CPU two more things keep a pass near the cost of the draws themselves
(docs/performance.md has the measurements):
- a tensor is drawn in chunks of `chunk_numel` elements, so the buffer is a few MiB
  instead of the largest tensor (113 MiB for SmolLM2-135M's embedding). torch's CPU
  normal_ consumes its generator element by element and transforms blocks of 16, so a
  tensor drawn in chunks whose lengths are multiples of 16 (the last one at least 16
  long) gets exactly the numbers one whole-tensor draw would give: z is unchanged.
- a pass runs with one intra-op thread. normal_ with a generator is serial anyway, and
  the add that follows each draw is too small to gain from a second thread; with two,
  every add waits for the other thread to be scheduled, which on a busy 2-core box
  measured 8x slower than one thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

_MASK64 = (1 << 64) - 1
# Elements per CPU draw: 1 MiB of float32, small enough to stay in cache between the
# draw and the add, large enough that the per-op overhead (~500 ops per pass for a 135M
# model) is a rounding error. A multiple of 16, which keeps z chunking-invariant.
DEFAULT_CHUNK_NUMEL = 1 << 18


def derive_seed(*values: int) -> int:
    """A deterministic 63-bit seed mixed from integers (splitmix64 finaliser per value).

    Used for per-step seeds (base seed, step) and per-perturbation seeds (step seed, i).
    """
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & _MASK64)) & _MASK64
        h = (h + 0x9E3779B97F4A7C15) & _MASK64
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK64
        h ^= h >> 31
    return h >> 1


def default_no_decay(name: str, param: torch.Tensor) -> bool:
    """True for tensors that get no weight decay: biases and norm weights (as in MeZO).

    A tensor is exempt when its name contains "bias" or "norm" (any case) or it has at
    most one dimension.
    """
    lowered = name.lower()
    return "bias" in lowered or "norm" in lowered or param.ndim <= 1


@dataclass
class SPSAConfig:
    """Settings of the two-point SPSA estimator.

    Attributes:
        eps: perturbation scale. Default 1e-3 is MeZO's (large_models/mezo.sh) for
            full-parameter tuning.
        q: number of random directions per step; their updates are averaged. Default 1
            as in MeZO and ZO-Bench.
        weight_decay: decoupled from the gradient estimate as in MeZO's update
            theta -= lr (g z + wd theta); not applied to biases and norm weights. Default
            0.0 (MeZO's scripts use none).
    """

    eps: float = 1e-3
    q: int = 1
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.eps <= 0:
            raise ValueError(f"SPSAConfig.eps must be > 0, got {self.eps}")
        if self.q < 1:
            raise ValueError(f"SPSAConfig.q must be >= 1, got {self.q}")
        if self.weight_decay < 0:
            raise ValueError(f"SPSAConfig.weight_decay must be >= 0, got {self.weight_decay}")


@dataclass
class SPSAStepResult:
    """What one SPSA step measured.

    Attributes:
        loss: mean over the q perturbations of (L+ + L-) / 2.
        projected_grads: (L+ - L-) / (2 eps), one per perturbation.
        forward_passes: loss evaluations used (2 q).
    """

    loss: float
    projected_grads: list[float]
    forward_passes: int


@dataclass
class _Entry:
    name: str
    param: torch.Tensor
    decay: bool


class SPSA:
    """Seeded two-point SPSA over a fixed, ordered set of tensors, updated in place.

    z for a seed is defined as: seed this object's generator for each device (the first
    device with `seed`, later ones with derive_seed(seed, k)), then for each tensor, in
    the order given, draw `numel` standard normals from its device's generator. Tensors
    repeated in `named_params` (tied weights) are kept once.

    Args:
        named_params: (name, tensor) pairs to perturb and update, e.g.
            model.named_parameters().
        config: eps, q and weight decay.
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
    ) -> None:
        if chunk_numel < 16:
            raise ValueError(f"chunk_numel must be >= 16, got {chunk_numel}")
        self.config = config
        self.chunk_numel = chunk_numel - chunk_numel % 16
        self.single_thread = single_thread
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
        self._cpu_only = all(
            e.param.device.type == "cpu" and self._draw_device(e.param).type == "cpu"
            for e in self.entries
        )

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    @property
    def numel(self) -> int:
        return sum(e.param.numel() for e in self.entries)

    def perturbation_seed(self, seed: int, i: int) -> int:
        """Seed of the i-th of q perturbations in a step with `seed` (i = 0 gives `seed`)."""
        return seed if i == 0 else derive_seed(seed, i)

    def _draw_device(self, param: torch.Tensor) -> torch.device:
        return self.generator_device if self.generator_device is not None else param.device

    def _seed_generators(self, seed: int) -> None:
        for k, generator in enumerate(self._generators.values()):
            generator.manual_seed(seed if k == 0 else derive_seed(seed, k))

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

    def _iter_z(self, seed: int) -> Iterable[tuple[_Entry, torch.Tensor, torch.Tensor]]:
        """Yield (entry, target, z): target is the part of entry.param that z (a view of
        the reused buffer, valid until the next yield) belongs to."""
        self._seed_generators(seed)
        for entry in self.entries:
            p = entry.param
            device = self._draw_device(p)
            buffer = self._buffers[(device, p.dtype)]
            generator = self._generators[device]
            ranges = self._chunks(p)
            flat = p.view(-1) if len(ranges) > 1 else None
            for start, stop in ranges:
                if flat is None:
                    target, z = p, buffer[: p.numel()].view(p.shape)
                else:
                    target, z = flat[start:stop], buffer[: stop - start]
                z.normal_(generator=generator)
                if device != p.device:
                    z = z.to(p.device)
                yield entry, target, z

    @contextmanager
    def _pass_threads(self) -> Iterator[None]:
        threads = torch.get_num_threads()
        if not (self.single_thread and self._cpu_only) or threads == 1:
            yield
            return
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

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
        tensors. restore_scale=0 applies an update to unperturbed parameters;
        apply_weight_decay=False leaves decay out (used to decay once when q > 1).
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

    def _probe(self, loss_fn: Callable[[], torch.Tensor | float], seed: int) -> tuple[float, float]:
        """Evaluate L(theta + eps z) and L(theta - eps z); leaves theta at theta - eps z."""
        self.perturb_(seed, 1.0)
        loss_plus = float(loss_fn())
        self.perturb_(seed, -2.0)
        loss_minus = float(loss_fn())
        return loss_plus, loss_minus

    @torch.no_grad()
    def step(
        self, loss_fn: Callable[[], torch.Tensor | float], lr: float, seed: int
    ) -> SPSAStepResult:
        """One SPSA step: estimate along q seeded directions, then update in place.

        With q > 1 every direction is probed at the same theta (each restored right after
        its probe), and the update is the average theta -= lr (mean_i g_i z_i + wd theta):
        the last direction's restore is fused with its update, the others cost one more
        pass each (4q - 1 draws of z in all; 3 for q = 1).
        """
        q = self.config.q
        eps = self.config.eps
        seeds = [self.perturbation_seed(seed, i) for i in range(q)]
        grads: list[float] = []
        losses: list[float] = []
        for i, s in enumerate(seeds):
            loss_plus, loss_minus = self._probe(loss_fn, s)
            grads.append((loss_plus - loss_minus) / (2 * eps))
            losses.append((loss_plus + loss_minus) / 2)
            if i < q - 1:
                self.perturb_(s, 1.0)
        # The last perturbation is still applied: restore it and update (with decay) at once.
        self.restore_and_update_(seeds[-1], grads[-1] / q, lr)
        for s, g in zip(seeds[:-1], grads[:-1], strict=True):
            self.restore_and_update_(s, g / q, lr, restore_scale=0.0, apply_weight_decay=False)
        return SPSAStepResult(loss=sum(losses) / q, projected_grads=grads, forward_passes=2 * q)

    @torch.no_grad()
    def estimate(self, loss_fn: Callable[[], torch.Tensor | float], seed: int) -> list[float]:
        """The q projected gradients of a step with `seed`; parameters are restored."""
        grads = []
        for i in range(self.config.q):
            s = self.perturbation_seed(seed, i)
            loss_plus, loss_minus = self._probe(loss_fn, s)
            self.perturb_(s, 1.0)
            grads.append((loss_plus - loss_minus) / (2 * self.config.eps))
        return grads
