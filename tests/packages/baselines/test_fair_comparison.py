"""One AdamW for every FO part: Hi-ZFO's identities hold through the trial loop.

With rho = 1 Hi-ZFO is fo-adamw, with rho = 0 it is mezo: same losses step for step when
both run through run_trial with the same suite settings (schedule, warmup, decay groups,
dropout mode). These fail if any of those differ between the methods.
"""

from __future__ import annotations

import pytest
from helpers.specs import make_spec

from bench.train.recipe import TrialRecipe, run_trial

STEPS = 6


def _spec(method, config):
    return make_spec(
        method,
        config,
        seed=3,
        steps=STEPS,
        max_length=64,
        log_every=1,
        limit=2,
        eval_batch_size=2,
        max_gen_toks=4,
    )


def _losses(method, config):
    record = run_trial(_spec(method, config))
    assert record["status"] == "ok", record["error"]
    return [p["loss"] for p in record["curve"]]


@pytest.mark.parametrize(
    ("schedule", "eps"), [("linear", 1e-8), ("cosine", 1e-3)], ids=["linear", "cosine-eps"]
)
def test_rho_one_is_fo_adamw_with_the_shared_schedule_and_decay(schedule, eps):
    shared = {"schedule": schedule, "warmup_steps": 2, "weight_decay": 0.1, "eps": eps}
    fo = _losses("fo-adamw", {"lr": 3e-3, **shared})
    hz = _losses(
        "hizfo",
        {
            "rho": 1.0,
            "fo_lr": 3e-3,
            "fo_schedule": schedule,
            "fo_warmup_steps": 2,
            "fo_weight_decay": 0.1,
            "fo_eps": eps,
        },
    )
    assert fo == pytest.approx(hz, rel=1e-5, abs=1e-6)
    assert fo[-1] < fo[0]  # it trained: the identity is not two frozen models


def test_rho_one_differs_when_the_schedule_or_eps_differs():
    """The identity test can fail: a schedule or eps mismatch shows in the losses."""
    fo = _losses("fo-adamw", {"lr": 3e-3, "schedule": "linear", "warmup_steps": 2})
    hz = _losses("hizfo", {"rho": 1.0, "fo_lr": 3e-3})
    assert fo != pytest.approx(hz, rel=1e-5, abs=1e-6)
    fo = _losses("fo-adamw", {"lr": 3e-3, "eps": 1e-3})
    hz = _losses("hizfo", {"rho": 1.0, "fo_lr": 3e-3})
    assert fo != pytest.approx(hz, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(
    "schedule", [{}, {"schedule": "cosine", "warmup_steps": 2}], ids=["constant", "cosine"]
)
def test_rho_zero_is_mezo(schedule):
    mezo = _losses("mezo", {"lr": 1e-2, "eps": 1e-3, **schedule})
    zo_schedule = {f"zo_{key}": value for key, value in schedule.items()}
    hz = _losses("hizfo", {"rho": 0.0, "zo_lr": 1e-2, "zo_eps": 1e-3, **zo_schedule})
    assert mezo == pytest.approx(hz, rel=1e-5, abs=1e-6)
    assert len(set(mezo)) > 1


def test_rho_zero_differs_from_mezo_when_the_schedule_differs():
    mezo = _losses("mezo", {"lr": 1e-2, "schedule": "cosine", "warmup_steps": 2})
    hz = _losses("hizfo", {"rho": 0.0, "zo_lr": 1e-2})
    assert mezo != pytest.approx(hz, rel=1e-5, abs=1e-6)


def test_zo_off_trains_the_same_fo_set_and_freezes_the_rest():
    import torch

    config = {"rho": 0.5, "fo_lr": 3e-3, "zo_lr": 1e-2, "profile_batches": 1}
    runs = {}
    for label, extra in (("hizfo", {}), ("hizfo[zo-off]", {"zo_enabled": False})):
        recipe = TrialRecipe(_spec(label, {**config, **extra}), torch.device("cpu"))
        recipe.setup()
        before = {n: p.detach().clone() for n, p in recipe.model.named_parameters()}
        recipe.train()
        after = dict(recipe.model.named_parameters())
        changed = {n for n in before if not torch.equal(before[n], after[n])}
        runs[label] = (recipe.method.hizfo.fo_names, changed, recipe.record)
    fo_on, changed_on, _ = runs["hizfo"]
    fo_off, changed_off, record_off = runs["hizfo[zo-off]"]
    assert fo_on == fo_off  # same FO set: selection does not depend on ZO
    assert changed_off == set(fo_off)  # only the FO set moved
    assert changed_on > set(fo_on)  # with ZO on, the rest moved too
    assert record_off.passes["forward"] == STEPS  # no SPSA forwards with ZO off
