"""The verdict rules' error rates on simulated runs with a known truth (a small version of
`hizfo-bench calibrate`): false verdicts within their bound, planted effects found."""

from __future__ import annotations

import json
import math

from bench.analysis.calibrate import (
    NOMINAL,
    Setting,
    calibrate,
    default_settings,
    render,
)
from bench.analysis.claims import CONTRADICTED, NOT_TESTABLE, SUPPORTED
from bench.cli import main

REPLICATES = 150


def _bound(p: float, n: int) -> float:
    """p plus three Monte Carlo standard errors: a correct rule exceeds it by chance in
    about 1 of 700 checks."""
    return p + 3 * math.sqrt(p * (1 - p) / n)


def test_false_verdicts_stay_within_bounds_and_planted_effects_are_found():
    none = {"accuracy": "none", "time": "none", "stochasticity": "none"}
    settings = [
        Setting("null binary sd 1", 3, 30, 1.0, truth=none),
        Setting("null continuous sd 0.5", 5, 30, 0.5, "continuous", truth=none),
        Setting("null with a ZO dose", 3, 30, dose=-0.05, truth={"stochasticity": "none"}),
        Setting("score +2 logit", 5, 30, 0.0, score_effect=2.0, truth={"accuracy": SUPPORTED}),
        Setting("half the time", 5, 30, time_factor=2.0, truth={"time": SUPPORTED}),
        Setting("never reaches", 3, 30, never=True, truth={"time": CONTRADICTED}),
    ]
    rates = {(r.setting, r.claim): r for r in calibrate(settings, REPLICATES)}
    for r in rates.values():
        for wrong in r.false_verdicts:
            assert r.rate(wrong) <= _bound(NOMINAL, REPLICATES), (r.setting, r.claim, wrong)
    # Each planted effect is detected most of the time (the test fails if the rules
    # only ever said "inconclusive").
    assert rates[("score +2 logit", "accuracy")].rate(SUPPORTED) >= 0.8
    assert rates[("half the time", "time")].rate(SUPPORTED) >= 0.8
    assert rates[("never reaches", "time")].rate(CONTRADICTED) >= 0.8
    # Without a ZO dose, claim 3 is called untestable, not decided.
    assert rates[("null binary sd 1", "stochasticity")].rate(NOT_TESTABLE) >= 0.8
    assert rates[("null with a ZO dose", "stochasticity")].rate(NOT_TESTABLE) <= 0.2
    assert "| never reaches | time | contradicted |" in render(list(rates.values()))


def test_default_settings_cover_the_issue():
    names = [s.name for s in default_settings((3,), 30)]
    for sd in ("0", "0.5", "1"):
        for kind in ("binary", "continuous"):
            assert f"no effect, {kind}, seed sd {sd}, 3 seeds" in names
    assert any("never reaches" in n for n in names)
    assert any("half the time" in n for n in names)
    assert any(n.startswith("claim 3") for n in names)


def test_cli_writes_json_and_rejects_bad_sizes(tmp_path, capsys):
    out = tmp_path / "cal.json"
    code = main(
        ["calibrate", "--seeds", "3", "--documents", "20", "--replicates", "10", "--json", str(out)]
    )
    assert code in (0, 1)  # 10 replicates: a rate may exceed its bound by chance
    data = json.loads(out.read_text())
    assert data["seeds"] == [3] and data["documents"] == 20 and data["replicates"] == 10
    assert {r["claim"] for r in data["rates"]} == {"accuracy", "time", "stochasticity"}
    assert "| setting | claim | truth |" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    assert main(["calibrate", "--documents", "1", "--json", str(bad)]) == 2
    assert not bad.exists()
    assert "--documents must be at least 2" in capsys.readouterr().err
