"""Paper-sized shapes built offline with random weights (bench/model_configs.py), and
`hizfo-bench perf --model-config` at a reduced shape on CPU."""

from __future__ import annotations

import json

import pytest
import torch

from bench import model_configs


@pytest.mark.parametrize(
    ("name", "billions"),
    [("llama-1b", 1.24), ("llama-7b", 6.74), ("opt-1.3b", 1.32), ("opt-13b", 12.85)],
)
def test_full_shapes_have_the_published_parameter_counts(name: str, billions: float) -> None:
    # Counted on the meta device: no memory, no download.
    count = model_configs.parameter_count(model_configs.resolve(name))
    assert count / 1e9 == pytest.approx(billions, abs=0.01)


def test_scaled_shape_keeps_head_dim_vocab_and_grouping() -> None:
    full = model_configs.resolve("llama-7b")
    small = model_configs.scaled(full, 0.05)
    assert small["hidden_size"] // small["num_attention_heads"] == 128  # head dim kept
    assert small["num_attention_heads"] == 2 and small["num_hidden_layers"] == 2
    assert small["intermediate_size"] == 552 and small["vocab_size"] == 32000
    gqa = model_configs.scaled(model_configs.resolve("llama-1b"), 0.05)
    # 32 heads over 8 KV heads: a group of 4 is kept, so at least 4 heads.
    assert gqa["num_attention_heads"] == 4 and gqa["num_key_value_heads"] == 1
    opt = model_configs.scaled(model_configs.resolve("opt-13b"), 0.1)
    assert opt["word_embed_proj_dim"] == opt["hidden_size"] == 4 * 128
    assert model_configs.scaled(full, 1.0) == full
    with pytest.raises(model_configs.ModelConfigError, match="scale"):
        model_configs.scaled(full, 0)


def test_build_makes_the_shape_on_the_device_in_the_dtype() -> None:
    config = model_configs.scaled(model_configs.resolve("opt-1.3b"), 0.05)
    model = model_configs.build(config, "cpu", torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.config.hidden_size == config["hidden_size"]
    assert torch.get_default_dtype() == torch.float32  # restored
    ids = torch.randint(0, 100, (1, 6))
    assert torch.isfinite(model(input_ids=ids, labels=ids).loss)


def test_a_config_file_and_bad_names(tmp_path) -> None:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({**model_configs.MODEL_CONFIGS["llama-1b"], "vocab_size": 99}))
    assert model_configs.resolve(str(path))["vocab_size"] == 99
    with pytest.raises(model_configs.ModelConfigError, match="unknown model config"):
        model_configs.resolve("llama-70b")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(model_configs.ModelConfigError, match="model_type"):
        model_configs.resolve(str(tmp_path / "bad.json"))


def test_perf_model_config_runs_reduced_on_cpu(tmp_path, capsys) -> None:
    from bench.cli import main

    out = tmp_path / "perf.json"
    argv = ["perf", "--model-config", "llama-1b", "--device", "cpu", "--methods", "fo-adamw"]
    argv += ["--batch-size", "2", "--seq-len", "16", "--repeats", "1", "--warmup", "0"]
    argv += ["--threads", "1", "--no-naive", "--json", str(out)]
    assert main(argv) == 0
    summary = json.loads(out.read_text())
    model = summary["models"][0]
    # On CPU without --scale the shape is reduced by CPU_SCALE, and the label says so
    # (and that the batch is not the default 8 x 64).
    assert model["model"] == f"config:llama-1b@{model_configs.CPU_SCALE:g}:2x16"
    expected = model_configs.scaled(model_configs.resolve("llama-1b"), model_configs.CPU_SCALE)
    assert model["parameters"] == model_configs.parameter_count(expected)
    assert model["methods"]["fo-adamw"]["status"] == "ok"


@pytest.mark.parametrize(
    "extra",
    [
        ["--model-config", "llama-70b"],
        ["--scale", "0.5"],
        ["--model-config", "llama-1b", "--scale", "2"],
    ],
)
def test_perf_rejects_bad_model_options(extra, capsys) -> None:
    from bench.cli import main

    assert main(["perf", *extra]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
