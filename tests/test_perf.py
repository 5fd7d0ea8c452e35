"""`hizfo-bench perf` end to end on the tiny model, and the performance changes it relies on
(chunked, single-threaded SPSA passes). No timing assertions: targets live in the
benchmark's output, not in tests."""

from __future__ import annotations

import json

import pytest
import torch

from bench import perf, store
from hizfo.zo import SPSA, SPSAConfig


def test_perf_command_writes_ratios_and_contract_trials(tmp_path) -> None:
    from bench.cli import main
    from bench.regress import load_records

    run_dir, json_path = tmp_path / "run", tmp_path / "perf.json"
    argv = ["perf", "--model", "tiny", "--repeats", "1", "--warmup", "0", "--threads", "1"]
    argv += ["--methods", "mezo,fo-adamw,hizfo", "--out", str(run_dir), "--json", str(json_path)]
    assert main(argv) == 0
    assert torch.get_num_threads() == 1  # --threads is undone afterwards

    summary = json.loads(json_path.read_text())
    assert json.loads((run_dir / "perf.json").read_text())["ratios"] == summary["ratios"]
    assert set(summary["ratios"]) == set(perf.RATIO_KEYS)
    for key in (
        "mezo_step_over_two_forwards",
        "fo_step_over_forward",
        "hizfo_step_over_fo_step",
        "mezo_peak_over_inference_peak",
        "fo_peak_over_inference_peak",
        "mezo_step_over_naive_mezo_step",
        "hizfo_shared_step_over_hizfo_step",
    ):
        assert summary["ratios"][key] > 0, key
    assert {t["ratio"] for t in summary["targets"]} == {
        "mezo_step_over_two_forwards",
        "mezo_peak_over_inference_peak",
        "hizfo_step_over_fo_step",
    }
    assert all(t["met"] in (True, False) for t in summary["targets"])

    records = load_records(run_dir)  # what `hizfo-bench compare` reads
    assert {r["method"] for r in records} == {
        "mezo",
        "fo-adamw",
        "hizfo",
        "hizfo[shared_forward]",
    }
    for r in records:
        assert all(k in r for k in store.REQUIRED_FIELDS)
        assert (r["task"], r["model"], r["seed"], r["status"]) == ("perf", "tiny", 0, "ok")
        assert r["train_seconds"] > 0 and r["peak_memory_bytes"] > 0
        assert (
            r["metrics"]["mezo_step_over_two_forwards"]
            == summary["ratios"]["mezo_step_over_two_forwards"]
        )
    by_method = {r["method"]: r for r in records}
    assert by_method["mezo"]["passes"] == {"forward": 2, "backward": 0}
    assert by_method["hizfo"]["passes"] == {"forward": 3, "backward": 1}
    assert by_method["hizfo[shared_forward]"]["passes"] == {"forward": 2, "backward": 1}


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
