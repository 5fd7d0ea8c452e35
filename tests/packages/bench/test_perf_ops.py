"""Operator counts (bench/perf/ops.py) and perf's method knowledge from traits: the
counter sees forward, backward and fused calls; a method row reports its step's count
beside its floor's and the difference; a renamed copy of a method gets the same perf
ratios, targets and memory fraction as the original, since nothing is keyed by name."""

from __future__ import annotations

import pytest
import torch
from helpers.plugins import install_plugin

from bench import perf, registry
from bench.perf import estimates, ops
from bench.perf.methods import measure_method
from bench.perf.settings import PerfSettings
from bench.perf.workload import load_model, make_batch

CPU = torch.device("cpu")


def test_the_counter_sees_each_call_a_fused_call_once_and_the_backward() -> None:
    tensors = [torch.zeros(4) for _ in range(3)]

    def loop() -> None:
        for t in tensors:
            t.add_(1.0)

    assert ops.count_ops(loop) == {"total": 3, "top": {"add_": 3}}
    assert ops.count_ops(lambda: torch._foreach_add_(tensors, 1.0))["total"] == 1

    model = load_model(PerfSettings(model="tiny"), CPU)
    batch = make_batch(model, 2, 8, CPU)

    def forward() -> None:
        with torch.no_grad():
            model(**batch)

    def forward_backward() -> None:
        model(**batch).loss.backward()

    one, again = ops.count_ops(forward), ops.count_ops(forward)
    assert one == again and one["total"] > 0  # exact: the same count every call
    both = ops.count_ops(forward_backward)["total"]
    assert both > 2 * one["total"]  # the backward's calls are counted too
    # The floor of a step's passes: one forward with the (partial) backward, the others
    # no-grad; a step without backward, its forwards.
    assert ops.floor_ops(10, 30, {"forward": 3, "backward": 1}) == 30 + 2 * 10
    assert ops.floor_ops(10, 30, {"forward": 2, "backward": 0}) == 20


@pytest.mark.parametrize(
    ("name", "overrides", "passes"),
    [("mezo", {}, {"forward": 2, "backward": 0}), ("hizfo", {"rho": 0.5}, None)],
)
def test_a_method_row_reports_its_count_beside_its_floor(name, overrides, passes) -> None:
    settings = PerfSettings(model="tiny", batch_size=2, seq_len=8, repeats=1, max_repeats=1)
    settings.warmup = 0
    result = measure_method(name, overrides, settings, CPU, floors=())
    counted = result["ops"]
    assert set(counted) == {"step", "forward", "partial_backward", "floor", "top"}
    if passes is not None:
        assert result["passes_per_step"] == passes
    floor = ops.floor_ops(
        counted["forward"], counted["partial_backward"], result["passes_per_step"]
    )
    assert counted["floor"] == floor
    # The step runs its floor's passes and more: the perturbation, the update.
    assert counted["step"] > counted["floor"] > 0
    assert set(counted["top"]) == {"step", "forward", "partial_backward"}
    rows = {name: {"status": "ok", "method": name, **result}}
    ratios, _, _ = perf.compute_ratios({}, rows, lambda n: perf.method_ratios(n, _traits()))
    assert ratios[f"{name}_ops_minus_floor_ops"] == counted["step"] - counted["floor"]
    assert ratios[f"{name}_ops_over_floor_ops"] == pytest.approx(counted["step"] / floor)


def _traits():
    from bench.method import MethodTraits

    return MethodTraits()


COPIES = """
from baselines.fo_adamw import FOAdamW
from baselines.hizfo import HiZFOMethod
from baselines.mezo import MeZO


class RenamedAdamW(FOAdamW):
    pass


class RenamedHiZFO(HiZFOMethod):
    pass


class RenamedMeZO(MeZO):
    pass
"""


@pytest.fixture
def renamed_methods(tmp_path, monkeypatch):
    """fo-adamw, hizfo and mezo registered again as "ref-copy", "hybrid-copy" and
    "zo-copy" (classes that only inherit), for this test's process."""
    folder = tmp_path / "plugins"
    install_plugin(folder, "perf_renamed_methods", "hybrid-copy", "RenamedHiZFO", COPIES)
    entries = folder / "perf_renamed_methods-0.1.dist-info" / "entry_points.txt"
    entries.write_text(
        "[hizfo_bench.methods]\n"
        "ref-copy = perf_renamed_methods:RenamedAdamW\n"
        "hybrid-copy = perf_renamed_methods:RenamedHiZFO\n"
        "zo-copy = perf_renamed_methods:RenamedMeZO\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    registry.refresh_methods()
    yield {"fo-adamw": "ref-copy", "hizfo": "hybrid-copy", "mezo": "zo-copy"}
    monkeypatch.undo()
    registry.refresh_methods()


def test_a_renamed_copy_gets_the_same_perf_ratios_targets_and_memory(renamed_methods) -> None:
    for original, copy in renamed_methods.items():
        same = perf.ratios_of(original)
        renamed = perf.ratios_of(copy)
        assert [(r.kind, r.targets, r.variants_only) for r in renamed] == [
            (r.kind, r.targets, r.variants_only) for r in same
        ]
        for r, s in zip(renamed, same, strict=True):
            # Keyed by the row's label; the reference's spelled "fo" whatever its name.
            assert r.method == copy and r.prefix == ("fo" if s.prefix == "fo" else copy)
        for config in ({"rho": 0.25}, {}):
            assert estimates.trained_fraction(copy, config) == estimates.trained_fraction(
                original, config
            )
    assert estimates.trained_fraction("hybrid-copy", {"rho": 0.25}) == 0.25
    assert estimates.trained_fraction("hybrid-copy", {}) == 0.5  # HiZFOConfig's default
    assert estimates.trained_fraction("ref-copy", {}) == 1.0
    assert estimates.trained_fraction("zo-copy", {}) == 0.0


def test_a_renamed_copy_gets_the_same_rows_and_targets_end_to_end(renamed_methods) -> None:
    settings = PerfSettings(
        model="tiny", batch_size=2, seq_len=8, repeats=1, max_repeats=1, warmup=0, naive=False
    )
    settings.methods = ("hizfo", "hybrid-copy")
    summary = perf.run_perf(settings)
    model = summary["models"][0]
    rows = model["methods"]
    assert set(rows) == {
        f"{n}{v}" for n in ("hizfo", "hybrid-copy") for v in ("", "[shared_forward]", "[one_sided]")
    }
    assert all(r["status"] == "ok" for r in rows.values()), rows
    targets = {t["ratio"]: t["limit"] for t in model["targets"]}
    original = {k: v for k, v in targets.items() if k.startswith("hizfo")}
    copied = {k.replace("hybrid-copy", "hizfo"): v for k, v in targets.items() if k not in original}
    assert copied == original and original["hizfo_step_over_own_floor"] == 1.1
    keys = {k for k in model["ratios"] if k.startswith("hizfo")}
    assert {
        k.replace("hybrid-copy", "hizfo") for k in model["ratios"] if k.startswith("hybrid")
    } == keys


def test_paper_batch_is_the_papers_tokens_per_step() -> None:
    from bench.cli import build_parser
    from bench.cli.errors import UsageError
    from bench.cli.perf import _settings

    parser = build_parser()
    settings = _settings(parser.parse_args(["perf", "--paper-batch"]))
    assert (settings.batch_size, settings.seq_len) == (16, 512)
    assert (_settings(parser.parse_args(["perf"])).batch_size, settings.repeats) == (8, 5)
    with pytest.raises(UsageError, match="--paper-batch sets the batch"):
        _settings(parser.parse_args(["perf", "--paper-batch", "--seq-len", "128"]))


def test_the_zo_floor_with_parameter_traffic() -> None:
    # llama-1b in bf16 on an H200 at 8 x 64 (forward 19 ms measured): 3 sweeps reading and
    # writing 1.24B x 2 bytes move 14.8 GB, 3.1 ms at 4.8 TB/s: 1.08 x two forwards.
    p = model_configs_parameters("llama-1b")
    floor = estimates.zo_traffic_floor(p, 2, 0.019, estimates.H200.bandwidth)
    assert floor["traffic_bytes"] == 6 * p * 2
    assert floor["traffic_seconds"] == pytest.approx(6 * p * 2 / 4.8e12)
    assert floor["step_over_two_forwards"] == pytest.approx(1 + 3 * p * 2 / (4.8e12 * 0.019))
    assert 1.07 < floor["step_over_two_forwards"] < 1.09


def model_configs_parameters(name: str) -> int:
    from bench import model_configs

    return model_configs.parameter_count(model_configs.resolve(name))


def test_fo_fraction_is_a_share_or_a_config_field() -> None:
    from dataclasses import dataclass

    from bench.method import method_traits

    @dataclass
    class Config:
        share: float = 0.3

    class Method:
        config_class = Config
        fo_fraction = "share"
        perf_ratios = {"step_over_own_floor": {"cuda": 1.2}}

    traits = method_traits(Method)
    assert traits.trained_fraction({"share": 0.7}) == 0.7
    assert traits.perf_ratios == (("step_over_own_floor", (("cuda", 1.2),)),)
    Method.fo_fraction = "missing"
    with pytest.raises(ValueError, match="names no config field"):
        method_traits(Method)
    Method.fo_fraction = 1.5
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        method_traits(Method)


def test_a_batch_other_than_the_default_is_in_the_model_label() -> None:
    from bench.perf.workload import model_label

    assert model_label(PerfSettings(model="tiny"), CPU) == "tiny"
    paper = PerfSettings(model="tiny", batch_size=16, seq_len=512)
    assert model_label(paper, CPU) == "tiny:16x512"
    shape = PerfSettings(model_config="llama-1b", batch_size=16, seq_len=512)
    assert model_label(shape, CPU) == "config:llama-1b@0.05:16x512"
