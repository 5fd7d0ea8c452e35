"""`hizfo-bench perf` end to end on the tiny model, and the performance changes it relies on
(chunked, single-threaded SPSA passes). No timing assertions: targets live in the
benchmark's output, not in tests."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bench import perf, store
from bench.method import MethodTraits
from bench.perf import ratios as perf_ratios
from hizfo.zo import SPSA, SPSAConfig

MEZO_ROWS = {"mezo", "mezo[keep_z]", "mezo[rademacher]", "mezo[keep_z+rademacher]"}
HIZFO_ROWS = {"hizfo", "hizfo[shared_forward]", "hizfo[one_sided]"}


def test_perf_command_writes_ratios_and_contract_trials(tmp_path, capsys) -> None:
    from bench.analysis.regress import load_records
    from bench.cli import main

    run_dir, json_path = tmp_path / "run", tmp_path / "perf.json"
    argv = ["perf", "--model", "tiny", "--repeats", "2", "--max-repeats", "2", "--warmup", "0"]
    argv += ["--threads", "1", "--methods", "mezo,fo-adamw,hizfo"]
    argv += ["--out", str(run_dir), "--json", str(json_path)]
    assert main(argv) == 0  # without --strict a missed target is not an error
    assert torch.get_num_threads() == 1  # --threads is undone afterwards
    printed = capsys.readouterr().out

    summary = json.loads(json_path.read_text())
    assert json.loads((run_dir / "perf.json").read_text())["ratios"] == summary["ratios"]
    ratios = summary["ratios"]
    # One key per ratio definition and row, named after the row's label.
    expected = set(perf.REFERENCE_RATIOS)
    for label in MEZO_ROWS:
        expected |= {
            f"{label}_step_over_two_forwards",
            f"{label}_peak_over_inference_peak",
            f"{label}_step_over_naive_mezo_step",
        }
    expected |= {f"{label}_step_over_mezo_step" for label in MEZO_ROWS - {"mezo"}}
    expected |= {"fo_step_over_forward", "fo_peak_over_inference_peak"}
    for label in HIZFO_ROWS:
        expected |= {f"{label}_step_over_fo_step", f"{label}_step_over_own_floor"}
    expected |= {f"{label}_step_over_hizfo_step" for label in HIZFO_ROWS - {"hizfo"}}
    # Every row's operator calls against its floor's, the reference's spelled "fo".
    for label in MEZO_ROWS | HIZFO_ROWS | {"fo"}:
        expected |= {f"{label}_ops_over_floor_ops", f"{label}_ops_minus_floor_ops"}
    assert set(ratios) == expected
    assert all(v is not None and v > 0 for v in ratios.values()), ratios
    for label, row in summary["models"][0]["methods"].items():
        ops = row["ops"]
        key = "fo" if label == "fo-adamw" else label
        assert ratios[f"{key}_ops_minus_floor_ops"] == ops["step"] - ops["floor"]
        assert ratios[f"{key}_ops_over_floor_ops"] == pytest.approx(ops["step"] / ops["floor"])
        assert ops["top"]["step"] and ops["floor"] > ops["forward"] > 0

    # Targets, all ratios to a floor: each MeZO row against 1.3 on CPU and 1.1 peak; each
    # Hi-ZFO row against 1.1 x its own floor (no target against AdamW's step). A verdict
    # agrees with the value, or there is none and the line says why.
    targets = {t["ratio"]: t for t in summary["targets"]}
    assert set(targets) == {
        *(f"{r}_step_over_two_forwards" for r in MEZO_ROWS),
        *(f"{r}_peak_over_inference_peak" for r in MEZO_ROWS),
        *(f"{r}_step_over_own_floor" for r in HIZFO_ROWS),
    }
    assert targets["mezo[keep_z]_step_over_two_forwards"]["limit"] == 1.3
    assert targets["hizfo[one_sided]_step_over_own_floor"]["limit"] == 1.1
    for t in targets.values():
        if t["met"] is None:
            assert t["verdict"].startswith("interval too wide"), t
            assert t["high"] / t["value"] - 1 > 0.05
        else:
            assert t["met"] == (t["value"] <= t["limit"])
        assert t["threads"] == 1
        assert any(t["ratio"] in line and t["verdict"] in line for line in printed.splitlines())

    # The machine fingerprint is in the output and in perf.json.
    env = summary["environment"]
    assert env["machine_key"] and env["machine"]["cpu_count"] >= 1
    assert printed.splitlines()[0].startswith(f"machine {env['machine_key']}:")

    # Ratios paired with floors are geometric means of per-round ratios, from the samples,
    # with a t-interval on the log ratios.
    hizfo = summary["models"][0]["methods"]["hizfo"]
    floors = hizfo["floors"]
    assert set(floors) == {"forward", "partial_backward"}
    assert len(hizfo["seconds"]) == len(floors["forward"]["seconds"]) == 2  # 2 rounds each
    own = [
        s / (b + (hizfo["passes_per_step"]["forward"] - 1) * f)
        for s, b, f in zip(
            hizfo["seconds"],
            floors["partial_backward"]["seconds"],
            floors["forward"]["seconds"],
            strict=True,
        )
    ]
    assert ratios["hizfo_step_over_own_floor"] == pytest.approx(math.sqrt(own[0] * own[1]))
    interval = summary["intervals"]["hizfo_step_over_own_floor"]
    assert interval["low"] < ratios["hizfo_step_over_own_floor"] < interval["high"]
    assert interval["n"] == 2 and interval["threads"] == 1
    assert 0 < hizfo["step_extras"]["backward_depth"] < 1  # rho 0.5: a partial backward

    records = [r.to_dict() for r in load_records(run_dir)]  # what `hizfo-bench compare` reads
    assert {r["method"] for r in records} == MEZO_ROWS | HIZFO_ROWS | {"fo-adamw"}
    for r in records:
        assert all(k in r for k in store.REQUIRED_FIELDS)
        assert (r["task"], r["model"], r["seed"], r["status"]) == ("perf", "tiny", 0, "ok")
        assert r["train_seconds"] > 0 and r["peak_memory_bytes"] > 0
        assert r["metrics"]["mezo_step_over_two_forwards"] == ratios["mezo_step_over_two_forwards"]
    by_method = {r["method"]: r for r in records}
    assert by_method["mezo"]["passes"] == {"forward": 2, "backward": 0}
    assert by_method["mezo[keep_z+rademacher]"]["passes"] == {"forward": 2, "backward": 0}
    assert by_method["hizfo"]["passes"] == {"forward": 3, "backward": 1}
    assert by_method["hizfo[shared_forward]"]["passes"] == {"forward": 2, "backward": 1}
    assert by_method["hizfo[one_sided]"]["passes"] == {"forward": 2, "backward": 1}
    # The variants' configs reached the methods.
    config = {label: by_method[label]["config"]["method_config"] for label in by_method}
    assert config["mezo[keep_z]"]["keep_z"] and not config["mezo"]["keep_z"]
    assert config["mezo[rademacher]"]["distribution"] == "rademacher"
    assert config["hizfo[one_sided]"]["zo_estimator"] == "one-sided"


def test_perf_rows_of_the_mezo_gv_plugins_against_their_m_plus_2_forwards(tmp_path, capsys) -> None:
    """plugins/mezo-gv's methods get perf rows (MeZO-GV in both its variants) on the tiny
    model, each paired with M + 2 = 6 no-grad forwards (M = 4), and MeZO's peak target."""
    from bench import registry
    from bench.cli import main

    registry._entry_points.cache_clear()
    try:
        registry.load_method("mezo-gv")
    except registry.MethodError:
        pytest.skip("plugins/mezo-gv is not installed here (scripts/setup.sh installs it)")
    json_path = tmp_path / "perf.json"
    argv = ["perf", "--model", "tiny", "--repeats", "2", "--max-repeats", "2", "--warmup", "0"]
    argv += ["--threads", "1", "--no-naive", "--methods", "mezo-gv,mezo-greedy"]
    argv += ["--json", str(json_path)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    summary = json.loads(json_path.read_text())
    rows = summary["models"][0]["methods"]
    assert set(rows) == {"mezo-gv", "mezo-gv[keep_direction]", "mezo-greedy"}
    ratios = summary["ratios"]
    for label, row in rows.items():
        assert row["status"] == "ok", row
        assert row["passes_per_step"] == {"forward": 6, "backward": 0}  # M + 2, no backward
        assert set(row["floors"]) == {"forward"}  # no partial backward timed for them
        forwards = row["floors"]["forward"]["seconds"]
        own = [s / (6 * f) for s, f in zip(row["seconds"], forwards, strict=True)]
        key = f"{label}_step_over_own_forwards"
        assert ratios[key] == pytest.approx(math.sqrt(own[0] * own[1]))
        assert ratios[f"{label}_peak_over_inference_peak"] > 0
        assert any(line.lstrip().startswith(label) for line in printed.splitlines()), label
    assert rows["mezo-greedy"]["step_extras"]["z_draws"] == 2 * 4 + 3  # 2M + 3 draws
    assert rows["mezo-gv"]["step_extras"]["z_draws"] == 5 * 4
    assert rows["mezo-gv[keep_direction]"]["step_extras"]["z_draws"] == 3 * 4
    assert rows["mezo-gv[keep_direction]"]["method_config"]["keep_direction"] is True
    assert ratios["mezo-gv[keep_direction]_step_over_mezo-gv_step"] > 0
    # Targets: only the peak (MeZO's limits); the step has a floor but no target yet.
    targets = {t["ratio"]: t["limit"] for t in summary["targets"]}
    assert targets == {f"{label}_peak_over_inference_peak": 1.1 for label in rows}


def test_strict_exits_1_on_a_missed_target(monkeypatch) -> None:
    # A limit no peak can meet, and one every peak meets: strict fails on the first only.
    # (A memory ratio has no rounds, so it gets a verdict after one step.)
    # Targets are what the method class declares (MethodTraits.perf_ratios).
    from baselines.mezo import MeZO
    from bench.cli import main

    argv = ["perf", "--model", "tiny", "--repeats", "1", "--warmup", "0", "--threads", "1"]
    argv += ["--methods", "mezo", "--no-naive", "--strict"]
    monkeypatch.setattr(MeZO, "perf_variants", {"": {}})
    monkeypatch.setattr(MeZO, "perf_ratios", {"peak_over_inference_peak": {"any": 1e-9}})
    assert main(argv) == 1
    monkeypatch.setattr(MeZO, "perf_ratios", {"peak_over_inference_peak": {"any": 1e9}})
    assert main(argv) == 0


def test_a_target_only_on_a_ratio_to_a_floor() -> None:
    with pytest.raises(ValueError, match="not a ratio to a floor"):
        perf.MethodRatio("hizfo", "hizfo", "step_over_fo_step", (("any", 0.75),))
    from bench.registry import available_methods

    kinds = {r.kind for name in available_methods() for r in perf.ratios_of(name) if r.targets}
    assert kinds and kinds <= set(perf_ratios.FLOOR_KINDS)
    bad = MethodTraits(perf_ratios=(("step_over_fo_step", (("any", 0.75),)),))
    with pytest.raises(ValueError, match="not a ratio to a floor"):
        perf.method_ratios("x", bad)
    with pytest.raises(ValueError, match="unknown perf ratio kind 'fast'"):
        perf.method_ratios("x", MethodTraits(perf_ratios=(("fast", ()),)))


def test_a_wide_interval_gets_no_verdict() -> None:
    from bench.perf.timing import ratio_interval

    # Ratios 1.0 and 1.2: geometric mean sqrt(1.2); log half-width t(0.975, 1) x sd / sqrt(2)
    # = 12.706 x ln(1.2) / 2 = 1.158, so the interval is value x exp(-+1.158): +218%.
    wide = ratio_interval([1.0, 1.2], [1.0, 1.0])
    assert wide["value"] == pytest.approx(math.sqrt(1.2))
    assert wide["half_width"] == pytest.approx(math.exp(12.706 * math.log(1.2) / 2) - 1, rel=1e-4)
    assert perf_ratios.verdict(wide["value"], wide, 2.0) == (None, "interval too wide (+-218%)")
    # Twenty rounds alternating 1.00 / 1.02: narrow, so a verdict either way.
    steps = [1.0, 1.02] * 10
    tight = ratio_interval(steps, [1.0] * 20)
    assert tight["half_width"] < 0.05 and tight["low"] < tight["value"] < tight["high"]
    assert perf_ratios.verdict(tight["value"], tight, 1.0) == (False, "MISSED")
    assert perf_ratios.verdict(tight["value"], tight, 1.1) == (True, "met")
    assert perf_ratios.verdict(None, {}, 1.1) == (None, "not measured")


def test_workloads_are_timed_in_rounds_until_the_interval_is_narrow() -> None:
    from bench.perf.timing import interleaved, pairs_narrow

    calls: list[str] = []
    workloads = {"a": lambda i: calls.append(f"a{i}"), "b": lambda i: calls.append(f"b{i}")}
    cpu = torch.device("cpu")
    seconds = interleaved(workloads, cpu, warmup=1, repeats=3, max_repeats=3)
    assert calls == ["a0", "b0", "a1", "b1", "a2", "b2", "a3", "b3"]  # A B A B ...
    assert [len(v) for v in seconds.values()] == [3, 3]
    # A test that never passes runs max_repeats rounds; one that always passes, repeats.
    never = interleaved(
        workloads, cpu, warmup=0, repeats=2, max_repeats=6, converged=lambda s: False
    )
    assert len(never["a"]) == 6
    always = interleaved(
        workloads, cpu, warmup=0, repeats=2, max_repeats=6, converged=lambda s: True
    )
    assert len(always["a"]) == 2
    assert not pairs_narrow([("a", "b", 1.0)])({"a": [1.0, 2.0], "b": [1.0, 1.0]})
    assert pairs_narrow([("a", "b", 2.0)])({"a": [2.0, 2.0], "b": [1.0, 1.0]})


def test_ratio_keys_come_from_the_labels() -> None:
    ratio = perf.MethodRatio("fo-adamw", "fo", "step_over_forward")
    assert ratio.key("fo-adamw") == "fo_step_over_forward"
    assert ratio.key("fo-adamw[bf16]") == "fo[bf16]_step_over_forward"
    default = perf.MethodRatio("mezo", "mezo", "step_over_default", variants_only=True)
    assert default.key("mezo[keep_z]") == "mezo[keep_z]_step_over_mezo_step"
    # A method nobody defined ratios for gets rows but no ratios; a failed row gets None.
    refs = {
        "forward": {"median_seconds": 1.0, "peak_bytes": 100, "seconds": [1.0]},
        "forward_backward": {"median_seconds": 3.0, "peak_bytes": 300, "seconds": [3.0]},
    }
    methods = {
        "mezo": {
            "status": "ok",
            "method": "mezo",
            "median_seconds": 2.6,
            "seconds": [2.6],
            "peak_bytes": 90,
            "passes_per_step": {"forward": 2, "backward": 0},
            "floors": {"forward": {"seconds": [1.3]}},
        },
        "mezo[x]": {"status": "failed", "method": "mezo"},
        "other": {"status": "ok", "method": "other", "median_seconds": 1.0, "seconds": [1.0]},
    }
    ratios, intervals, definitions = perf.compute_ratios(refs, methods)
    assert ratios["mezo_step_over_two_forwards"] == pytest.approx(1.0)  # paired: 2.6 / 2.6
    assert ratios["mezo[x]_step_over_two_forwards"] is None
    assert ratios["mezo_peak_over_inference_peak"] == pytest.approx(0.9)
    # A method that declares no ratios (or is not installed) gets only its operator
    # counts, None when they were not counted.
    assert {k for k in ratios if k.startswith("other")} == {
        "other_ops_over_floor_ops",
        "other_ops_minus_floor_ops",
    }
    assert ratios["other_ops_over_floor_ops"] is None
    rows = perf.check_targets(ratios, intervals, definitions, torch.device("cpu"))
    by_key = {r["ratio"]: r for r in rows if r["ratio"].startswith("mezo[x]")}
    assert by_key["mezo[x]_step_over_two_forwards"]["met"] is None  # not measured


def test_naive_reference_is_the_same_mezo_step() -> None:
    # The naive reference draws z from the global generator reseeded with the step seed,
    # which is the stream SPSA's own generator gives: same z, same update.
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    a = LlamaForCausalLM(config).double().eval().requires_grad_(False)
    b = LlamaForCausalLM(config).double().eval().requires_grad_(False)
    b.load_state_dict(a.state_dict())
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))
    g_naive = perf.naive_mezo_step(a, lambda: a(input_ids=ids, labels=ids).loss, 3, 1e-3, 1e-2)
    result = SPSA(b.named_parameters(), SPSAConfig(eps=1e-3)).step(
        lambda: b(input_ids=ids, labels=ids).loss, lr=1e-2, seed=3
    )
    assert result.projected_grads[0] == pytest.approx(g_naive, rel=1e-6)
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12, msg=name)


def test_chunked_draws_give_the_whole_tensor_z() -> None:
    # Sizes around the chunk (32): a tail shorter than 16 (100 = 3 * 32 + 4), a tail of
    # exactly 16, an exact multiple, one below the chunk, and a tensor smaller than 16.
    shapes = [(100,), (3, 16), (4, 16), (31,), (5,), (10, 10)]
    params = [torch.zeros(s, dtype=torch.float64) for s in shapes]
    spsa = SPSA([(f"p{i}", p) for i, p in enumerate(params)], SPSAConfig(eps=1.0), chunk_numel=32)
    assert [b.numel() for b in spsa._buffers.values()] == [32]
    spsa.perturb_(7, 1.0)
    generator = torch.Generator().manual_seed(7)
    for p in params:
        expected = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        torch.testing.assert_close(p, expected, rtol=0, atol=0)

    whole = [torch.ones(s) for s in shapes]
    chunked = [torch.ones(s) for s in shapes]
    config = SPSAConfig(weight_decay=0.1)
    SPSA([(f"w{i}", p) for i, p in enumerate(whole)], config).restore_and_update_(5, 2.0, 0.1)
    SPSA([(f"w{i}", p) for i, p in enumerate(chunked)], config, chunk_numel=32).restore_and_update_(
        5, 2.0, 0.1
    )
    for x, y in zip(whole, chunked, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_passes_run_single_threaded_and_restore_the_thread_count() -> None:
    torch.set_num_threads(2)
    try:
        seen = []
        p = torch.zeros(64)

        class Spy(SPSA):
            def _iter_z(self, seed):
                seen.append(torch.get_num_threads())
                return super()._iter_z(seed)

        Spy([("p", p)], SPSAConfig()).perturb_(0, 1.0)
        assert seen == [1]
        assert torch.get_num_threads() == 2
        Spy([("p", p)], SPSAConfig(), single_thread=False).perturb_(0, 1.0)
        assert seen == [1, 2]
    finally:
        torch.set_num_threads(1)


def test_rng_probe_predicts_from_its_own_figures() -> None:
    from bench.perf.rng import render_probe, rng_vs_matmul
    from bench.perf.settings import PerfSettings
    from bench.perf.workload import load_model, make_batch

    cpu = torch.device("cpu")
    model = load_model(PerfSettings(model="tiny"), cpu)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = make_batch(model, 2, 8, cpu)
    rows = rng_vs_matmul(model, batch, threads=(1,), repeats=3)
    assert [r["threads"] for r in rows] == [1]
    row = rows[0]
    assert row["predicted_mezo_ratio"] == pytest.approx(
        1 + 1.5 * row["pass_seconds"] / row["forward_seconds"]
    )
    assert row["fill_ns_per_element"] > 0 and row["matmul_gflops"] > 0
    # The passes alternate +eps z and -eps z (four of them): the weights come back.
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, before[name], rtol=0, atol=1e-6, msg=name)
    assert "MeZO/2fwd predicted" in render_probe(rows, "tiny")
