"""The bundled suites ask for what their docs promise (checked on the expanded specs)."""

from __future__ import annotations

import pytest

from bench.config import settings
from bench.suite import SUITES_DIR, load_plan

TRAINED = {"fo-adamw", "mezo", "lora", "hizfo"}


@pytest.mark.parametrize("name", sorted(p.stem for p in SUITES_DIR.glob("*.yaml")))
def test_every_bundled_suite_loads(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    suite = load_plan(name, check_sources=False)
    assert suite.specs


def _points(spec):
    every = spec.dev.eval_every
    return 0 if not every else 1 + spec.train.steps // every + (spec.train.steps % every > 0)


def test_mini_has_dev_curves_and_a_time_to_target():
    suite = load_plan("mini", check_sources=False)
    for spec in suite.specs:
        if spec.method in TRAINED:
            assert _points(spec) >= 4, spec.trial_id
    assert set(suite.targets) == {s.task for s in suite.specs}
    assert all(t.method == "fo-adamw" for t in suite.targets.values())


def test_claims_suite_runs_the_whole_argument():
    suite = load_plan("claims", check_sources=False)
    methods = {s.method for s in suite.specs}
    assert {"fo-adamw", "mezo", "hizfo", "hizfo[zo-off]", "hizfo[random]"} <= methods
    assert "hizfo[reverse]" in methods  # the reversed-importance ablation
    assert {s.task for s in suite.specs} == {"math-mini", "docstring-summary"}
    assert {s.seed for s in suite.specs} == {0, 1, 2}
    # Claim 3 compares sharpness of hizfo and its zo-off twin: both measure it, paired.
    sharp = {s.method for s in suite.specs if s.measure.sharpness}
    assert {"hizfo", "hizfo[zo-off]"} <= sharp
    assert all(_points(s) >= 3 for s in suite.specs)
    by = {(s.method, s.task, s.seed): s for s in suite.specs}
    # The ablations differ from hizfo only in the ablated setting.
    for s in suite.specs:
        if s.method == "hizfo[zo-off]":
            base = settings(by[("hizfo", s.task, s.seed)].method_config)
            assert {**base, "zo_enabled": False} == settings(s.method_config)
        if s.method == "hizfo[random]":
            base = settings(by[("hizfo", s.task, s.seed)].method_config)
            assert {**base, "selection": "random"} == settings(s.method_config)
        if s.method == "hizfo[reverse]":
            base = settings(by[("hizfo", s.task, s.seed)].method_config)
            assert {**base, "selection": "reverse"} == settings(s.method_config)
        if s.method == "hizfo":  # the ZO part at MeZO's tuned rate, per task (issue 30)
            assert s.method_config.zo_lr == by[("mezo", s.task, s.seed)].method_config.lr


def test_claims_zo_is_a_dose_response_with_its_twin_and_mezo_at_each_rate():
    from bench.analysis.claims import ZO_LR_OFF

    suite = load_plan("claims-zo", check_sources=False)
    by = {(s.method, s.seed): s for s in suite.specs}
    seeds = {s.seed for s in suite.specs}
    assert len(seeds) >= 8 and {s.task for s in suite.specs} == {"math-mini"}
    hizfo = [m for m in {s.method for s in suite.specs} if m.startswith("hizfo") and "off" not in m]
    rates = sorted(by[(m, 0)].method_config.zo_lr for m in hizfo)
    assert len(rates) >= 3 and rates[0] > ZO_LR_OFF
    mezo = sorted(s.method_config.lr for s in suite.specs if s.method.startswith("mezo"))
    assert sorted(set(mezo)) == rates  # MeZO alone at every rate of the ZO part
    for m in hizfo:  # each rate differs from its twin in the ZO part only
        cfg = settings(by[(m, 0)].method_config)
        twin = settings(by[("hizfo[zo-off]", 0)].method_config)
        assert {**cfg, "zo_enabled": False, "zo_lr": twin["zo_lr"]} == twin
        assert by[(m, 0)].measure.sharpness
    assert load_plan("claims-zo-gpu", check_sources=False).specs


def test_mezo_gv_rows_take_mezos_settings_in_smoke_and_their_papers_in_paper():
    """plugins/mezo-gv's methods: smoke runs them at mezo's smoke settings; paper at their
    paper's (Jin, Cen and Tan: q = 1, batch 16, eps 1e-3, lr 2e-7 on OPT, 10,000 steps)."""
    pools = ("mezo-gv", "mezo-greedy")
    smoke = {s.method: s for s in load_plan("smoke", check_sources=False).specs}
    for name in pools:
        assert smoke[name].method_config.lr == smoke["mezo"].method_config.lr
        assert smoke[name].method_config.eps == smoke["mezo"].method_config.eps
        assert smoke[name].train == smoke["mezo"].train
    paper = load_plan("paper", check_sources=False).specs
    for name in pools:
        rows = [s for s in paper if s.method == name]
        assert len(rows) == 4 * 4 * 3  # every model, task and seed
        for s in rows:
            assert s.train.steps == 10_000 and s.train.batch_size == 16
            assert s.method_config.lr == 2.0e-7 and s.method_config.eps == 1.0e-3
            assert s.method_config.candidates == 4  # ours: the paper's M is unknown
