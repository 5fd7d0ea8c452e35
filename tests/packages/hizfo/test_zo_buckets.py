"""SPSA's fused passes (hizfo.zo.plan_buckets): z drawn per bucket and applied with one
foreach call per bucket, with the numbers of the per-tensor definition (stream
"tensor"), and the opt-in stream "bucket"."""

from __future__ import annotations

import collections
import math

import pytest
import torch
from helpers.tiny import tiny_llama
from test_zo import lm_loss, reference_z
from torch.utils._python_dispatch import TorchDispatchMode

from hizfo.zo import SPSA, SPSAConfig, seed_generator

# Odd sizes (not multiples of 16), sizes under 16, multiples of 16, a non-contiguous
# tensor and tensors larger than the small buckets below.
SHAPES = [(100,), (3, 16), (4, 16), (31,), (5,), (10, 10), (7,), (64,), (48,), (2, 3), (200,)]


def reference_signs(shapes, seed: int, dtype=torch.float64) -> list[torch.Tensor]:
    """Rademacher z by its definition: per tensor ceil(n / 8) bytes, bits lowest first."""
    g = torch.Generator()
    seed_generator(g, seed)
    out = []
    for shape in shapes:
        n = math.prod(shape)
        words = torch.empty((n + 7) // 8, dtype=torch.uint8).random_(0, 256, generator=g)
        bits = (words.unsqueeze(1) >> torch.arange(8, dtype=torch.uint8)) & 1
        out.append((bits.reshape(-1)[:n].to(dtype) * 2 - 1).reshape(shape))
    return out


def zero_params(shapes, dtype=torch.float64, transposed: int | None = None):
    params = [torch.zeros(s, dtype=dtype) for s in shapes]
    if transposed is not None:  # a non-contiguous view: drawn whole, never cut
        params[transposed] = torch.zeros(tuple(reversed(shapes[transposed])), dtype=dtype).t()
    return params


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
@pytest.mark.parametrize("bucket", [16, 32, 48, 80, 160, None])
def test_bucketed_passes_draw_the_per_tensor_z(distribution: str, bucket: int | None) -> None:
    params = zero_params(SHAPES, transposed=9)
    spsa = SPSA(
        [(f"p{i}", p) for i, p in enumerate(params)],
        SPSAConfig(eps=1.0),
        bucket_numel=bucket,
        distribution=distribution,
    )
    assert all(b.numel <= spsa.bucket_numel + 15 for b in spsa.buckets)
    spsa.perturb_(2**40 + 3, 1.0)
    ref = reference_z if distribution == "gaussian" else reference_signs
    for i, (p, z) in enumerate(zip(params, ref(SHAPES, 2**40 + 3), strict=True)):
        assert torch.equal(p.reshape(z.shape), z), i
    # Every element of every tensor is in exactly one piece.
    covered = collections.Counter()
    for b in spsa.buckets:
        for piece in b.pieces:
            covered[piece.entry] += piece.stop - piece.start
    assert [covered[i] for i in range(len(params))] == [p.numel() for p in params]


def test_restore_and_update_with_decay_is_bit_for_bit_the_per_tensor_update() -> None:
    # One bucket per tensor piece (16) against one bucket for all: same floats.
    config = SPSAConfig(weight_decay=0.1)
    shapes = [(3, 16), (31,), (16, 4), (5,)]
    small = [torch.ones(s) for s in shapes]
    whole = [torch.ones(s) for s in shapes]
    named = [
        (f"w{i}" if len(s) > 1 else f"b{i}", p)
        for i, (s, p) in enumerate(zip(shapes, small, strict=True))
    ]
    SPSA(named, config, bucket_numel=16).restore_and_update_(5, 2.0, 0.1)
    named = [(n, p) for (n, _), p in zip(named, whole, strict=True)]
    SPSA(named, config, bucket_numel=1 << 20).restore_and_update_(5, 2.0, 0.1)
    for x, y in zip(small, whole, strict=True):
        assert torch.equal(x, y)
    g = torch.Generator().manual_seed(5)
    for (name, _), s, x in zip(named, shapes, small, strict=True):
        z = torch.randn(s, generator=g)
        keep = 0.99 if name.startswith("w") else 1.0
        expected = torch.ones(s).mul_(keep).add_(z, alpha=keep * 1e-3 - 0.1 * 2.0)
        assert torch.equal(x, expected), name


class OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
def test_a_pass_costs_operator_calls_per_bucket_not_per_tensor(distribution: str) -> None:
    counts = []
    for n in (8, 64, 512):  # the same 65536 elements as 8, 64 or 512 tensors
        params = [torch.zeros(65536 // n // 16, 16) for _ in range(n)]  # decayed
        spsa = SPSA(
            [(f"w{i}", p) for i, p in enumerate(params)],
            SPSAConfig(weight_decay=0.1),
            distribution=distribution,
        )
        spsa.perturb_(0, 1.0)  # views are built once, on the first pass
        with OpCounter() as counter:
            spsa.perturb_(1, 1.0)
            spsa.restore_and_update_(1, 0.5, 0.1)
        assert spsa.num_draw_calls == spsa.num_buckets
        counts.append((spsa.num_buckets, dict(counter.calls)))
    assert counts[0] == counts[1] == counts[2]
    buckets, calls = counts[0]
    assert calls["_foreach_add_"] == 2 * buckets  # perturb_, then the decayed update
    assert calls["_foreach_mul_"] == buckets
    draws = "normal_" if distribution == "gaussian" else "random_"
    assert calls[draws] == 2 * buckets
    assert sum(calls.values()) <= 13 * 2 * buckets  # rademacher: 11 ops per draw


def test_default_bucket_is_a_thirty_second_of_the_weights() -> None:
    params = [torch.zeros(1 << 16) for _ in range(40)]
    spsa = SPSA([(f"w{i}", p) for i, p in enumerate(params)], SPSAConfig())
    assert spsa.bucket_numel == (40 << 16) // 32
    assert spsa.num_buckets == 32
    ((_, buffer),) = spsa._buffers.items()
    assert buffer.numel() == spsa.bucket_numel


def test_bucket_stream_is_the_tensor_stream_on_multiples_of_16() -> None:
    a, b = tiny_llama(dtype=torch.float64), tiny_llama(dtype=torch.float64)
    assert all(p.numel() % 16 == 0 for p in a.parameters())
    sa = SPSA(a.named_parameters(), SPSAConfig(), bucket_numel=1000)
    sb = SPSA(b.named_parameters(), SPSAConfig(), bucket_numel=1000, stream="bucket")
    for seed in (0, 1):
        sa.step(lm_loss(a), lr=1e-2, seed=seed)
        sb.step(lm_loss(b), lr=1e-2, seed=seed)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_bucket_stream_draws_once_per_bucket_with_the_same_distribution() -> None:
    # Sizes that are not multiples of 16: the streams differ after the first odd tensor,
    # the entries are still independent standard normals (tolerances: 6 sigma).
    shapes = [(37,)] * 300 + [(5,)] * 200
    params = zero_params(shapes, dtype=torch.float32)
    spsa = SPSA(
        [(f"p{i}", p) for i, p in enumerate(params)],
        SPSAConfig(eps=1.0),
        bucket_numel=1024,
        stream="bucket",
    )
    assert spsa.num_draw_calls == spsa.num_buckets < len(shapes) // 10
    spsa.perturb_(9, 1.0)
    z = torch.cat([p.reshape(-1) for p in params]).double()
    n = z.numel()
    assert abs(float(z.mean())) < 6 / math.sqrt(n)
    assert abs(float(z.var()) - 1) < 6 * math.sqrt(2 / n)
    assert abs(float((z[1:] * z[:-1]).mean())) < 6 / math.sqrt(n)
    tensor_stream = torch.cat([r.reshape(-1) for r in reference_z(shapes, 9, torch.float32)])
    assert not torch.equal(z.float(), tensor_stream)
    # The same up to the first odd tensor's last block of 16 (37 = 21 + 16).
    assert torch.equal(z.float()[:21], tensor_stream[:21])
    assert not torch.equal(z.float()[21:37], tensor_stream[21:37])


def test_cached_views_follow_new_storage() -> None:
    p = torch.nn.Parameter(torch.zeros(64))
    spsa = SPSA([("p", p)], SPSAConfig(eps=1.0))
    spsa.perturb_(3, 1.0)
    first = p.detach().clone()
    p.data = torch.zeros(64)  # new storage, as Module.to() gives
    spsa.perturb_(3, 1.0)
    assert torch.equal(p.detach(), first)


def test_keep_z_passes_reuse_the_kept_buckets() -> None:
    model = tiny_llama()
    spsa = SPSA(model.named_parameters(), SPSAConfig(), keep_z=True, bucket_numel=512)
    spsa.perturb_(4, 1.0)
    with OpCounter() as counter:
        spsa.perturb_(4, -1.0)
    assert counter.calls["normal_"] == 0
    assert counter.calls["_foreach_add_"] == spsa.num_buckets


def test_cpu_buckets_are_cache_sized_and_launch_plan_plans_for_a_gpu() -> None:
    """On a CPU the default bucket is at most CPU_BUCKET_NUMEL (z drawn and added while
    in cache); under launch_plan() the same SPSA re-plans to 1/32 buckets, as on a GPU.
    z is the same under both: a step switched mid-way ends where an unswitched one does."""
    from hizfo.zo import CPU_BUCKET_NUMEL, launch_plan

    shapes = [(1 << 15, 8)] * 40  # 40 tensors of 2^18 elements: 1/32 is 5 tensors
    params = [[torch.zeros(s) for s in shapes] for _ in range(3)]
    spsas = [
        SPSA([(f"w{i}", p) for i, p in enumerate(ps)], SPSAConfig(eps=0.5, weight_decay=0.1))
        for ps in params
    ]
    assert spsas[0].bucket_numel == CPU_BUCKET_NUMEL and spsas[0].num_buckets == 40
    spsas[0].perturb_(7, 1.0)
    spsas[0].restore_and_update_(7, 0.3, 0.01)
    with launch_plan():
        spsas[1].perturb_(7, 1.0)
        assert spsas[1].bucket_numel == (40 << 18) // 32 and spsas[1].num_buckets == 32
        spsas[1].restore_and_update_(7, 0.3, 0.01)
        spsas[2].perturb_(7, 1.0)  # planned for a GPU here, the rest on the CPU plan
    spsas[2].restore_and_update_(7, 0.3, 0.01)
    assert spsas[1].num_buckets == 32 and spsas[2].num_buckets == 40  # re-planned back
    for a, b, c in zip(*params, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.equal(params[0][0], torch.zeros(shapes[0]))
    # An explicit bucket_numel is kept; stream "bucket" (z depends on the plan) keeps 1/32.
    explicit = SPSA([("w", torch.zeros(1 << 20))], SPSAConfig(), bucket_numel=1 << 16)
    bucket = SPSA([("w", torch.zeros(1 << 24))], SPSAConfig(), stream="bucket")
    with launch_plan():
        explicit.perturb_(1, 1.0)
        bucket.perturb_(1, 1.0)
    assert explicit.bucket_numel == 1 << 16 and bucket.bucket_numel == (1 << 24) // 32
