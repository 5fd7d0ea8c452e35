"""Intervals, variance components and power (bench/analysis/stats.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.analysis.stats import (
    Components,
    components,
    geometric_interval,
    mean_interval,
    power,
    seed_interval,
    seeds_for_power,
    split_settings,
)
from bench.record import TrialRecord


def test_seed_interval_is_a_t_interval_over_seed_means_when_documents_agree():
    # Every document moves with its seed: the interval is the seeds' t-interval.
    d = np.array([[0.1] * 10, [0.3] * 10, [0.2] * 10])
    iv = seed_interval(d)
    ref = mean_interval([0.1, 0.3, 0.2])
    assert iv.mean == pytest.approx(0.2)
    assert (iv.lo, iv.hi) == pytest.approx((ref.lo, ref.hi))
    assert iv.n == 3


def test_seed_interval_widens_with_a_document_component():
    rng = np.random.default_rng(0)
    docs = rng.normal(0, 1, 40)  # the same documents favour one method on every seed
    seeds = rng.normal(0, 0.05, 3)[:, None]
    d = docs[None, :] + seeds + rng.normal(0, 0.1, (3, 40))
    with_docs = seed_interval(d)
    seed_only = mean_interval(d.mean(axis=1))
    assert with_docs.half_width > 2 * seed_only.half_width


def test_one_seed_has_no_interval_and_no_components():
    d = np.array([[0.0, 1.0, 1.0, 0.0]])
    iv = seed_interval(d)
    assert iv.n == 1 and iv.lo is None and iv.hi is None
    assert components(d) is None
    assert power(0.1, Components(seed=0.01), 1) == 0.0


def test_power_and_seeds_for_power_agree():
    comps = Components(seed=0.004, doc=0.0, res=0.05)
    n = seeds_for_power(0.05, comps, documents=30)
    assert n is not None and n > 2
    assert power(0.05, comps, n, 30) >= 0.8 > power(0.05, comps, n - 1, 30)
    # A document component no number of seeds averages away.
    assert seeds_for_power(0.02, Components(seed=0.0, doc=0.01, res=0.0), 30) is None


def test_power_uses_t_quantiles_not_z():
    # 3 seeds: t(0.975, 2) = 4.30, so a difference of 2 sd per seed has power well below
    # what z = 1.96 would claim.
    comps = Components(seed=1.0)
    assert power(2.0, comps, 3) < 0.5


def test_geometric_interval():
    iv = geometric_interval([math.log(2.0), math.log(2.0), math.log(2.0)])
    assert iv.mean == pytest.approx(2.0) and iv.lo == pytest.approx(2.0)
    assert geometric_interval([]) is None


def test_split_settings_labels_the_minority_setting():
    def rec(seed, limit):
        return TrialRecord(
            f"m{seed}", "m", "t", "x", seed, config={"seed": seed, "eval": {"limit": limit}}
        )

    records = [rec(0, 30), rec(1, 30), rec(0, 4)]
    out, warnings = split_settings(records)
    assert sorted(r.method for r in out) == ["m", "m", "m{eval.limit=4}"]
    assert len(warnings) == 1 and "eval.limit" in warnings[0]
    same, none = split_settings(records[:2])
    assert [r.method for r in same] == ["m", "m"] and none == []
