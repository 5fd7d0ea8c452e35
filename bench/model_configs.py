"""Paper-sized model shapes, built with random weights directly on the device, offline.

Step time and memory do not depend on the weight values, so `hizfo-bench perf
--model-config NAME` times the architectures the paper used without downloading them:
the config below is the published one (layers, widths, heads, vocabulary), the weights
are transformers' random initialisation, run on the target device (``torch.device``
context: nothing is built on the CPU first). A config JSON file (a transformers config,
``model_type`` included) works the same way.

``scale`` (0 < scale <= 1) shrinks a shape for a CPU: heads, the MLP width and the layer
count are multiplied by it (at least 1 head, 1 layer), the head dimension and the
vocabulary are kept, so the proportions of attention, MLP and LM head stay those of
the model (the LM head's share grows as the body shrinks: say so next to any figure).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch

# Published shapes. Llama: Llama-3.2-1B and Llama-2-7B; OPT: facebook/opt-1.3b, -13b.
MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "llama-1b": dict(
        model_type="llama",
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=True,
        max_position_embeddings=4096,
    ),
    "llama-7b": dict(
        model_type="llama",
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        tie_word_embeddings=False,
        max_position_embeddings=4096,
    ),
    "opt-1.3b": dict(
        model_type="opt",
        vocab_size=50272,
        hidden_size=2048,
        ffn_dim=8192,
        num_hidden_layers=24,
        num_attention_heads=32,
        word_embed_proj_dim=2048,
        max_position_embeddings=2048,
    ),
    "opt-13b": dict(
        model_type="opt",
        vocab_size=50272,
        hidden_size=5120,
        ffn_dim=20480,
        num_hidden_layers=40,
        num_attention_heads=40,
        word_embed_proj_dim=5120,
        max_position_embeddings=2048,
    ),
    # The embedded model's shape and the smallest OPT of the paper suite.
    "smollm2-135m": dict(
        model_type="llama",
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        tie_word_embeddings=True,
        max_position_embeddings=8192,
    ),
    "opt-350m": dict(
        model_type="opt",
        vocab_size=50272,
        hidden_size=1024,
        ffn_dim=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        word_embed_proj_dim=512,
        max_position_embeddings=2048,
    ),
}

# Model sources of the bundled suites -> their shape here (for estimates, offline).
SOURCE_SHAPES: dict[str, str] = {
    "smollm2-135m": "smollm2-135m",
    "facebook/opt-350m": "opt-350m",
    "facebook/opt-1.3b": "opt-1.3b",
    "facebook/opt-13b": "opt-13b",
    "meta-llama/Llama-2-7b-hf": "llama-7b",
}

# The scale `perf` applies on a CPU when none is given (documented in docs/performance.md).
CPU_SCALE = 0.05


class ModelConfigError(ValueError):
    """An unknown config name, an unreadable config file or a bad scale (one line)."""


def resolve(name_or_path: str) -> dict[str, Any]:
    """The config dict of a MODEL_CONFIGS name or of a JSON file (with model_type)."""
    if name_or_path in MODEL_CONFIGS:
        return dict(MODEL_CONFIGS[name_or_path])
    path = Path(name_or_path)
    if path.suffix != ".json" and not path.exists():
        known = ", ".join(MODEL_CONFIGS)
        raise ModelConfigError(f"unknown model config {name_or_path!r}: one of {known}, or a JSON")
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelConfigError(f"model config {name_or_path}: {e}") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise ModelConfigError(f"model config {name_or_path}: a JSON object with model_type")
    return config


def scaled(config: dict[str, Any], scale: float) -> dict[str, Any]:
    """`config` with heads, MLP width and layers times `scale`; head dim and vocab kept."""
    if not 0 < scale <= 1:
        raise ModelConfigError(f"scale must be in (0, 1], got {scale}")
    if scale == 1:
        return dict(config)
    out = dict(config)
    heads = config["num_attention_heads"]
    head_dim = config["hidden_size"] // heads
    new_heads = max(1, round(heads * scale))
    kv = config.get("num_key_value_heads")
    if kv is not None:  # keep the grouped-query ratio where it divides
        group = max(1, heads // kv)
        new_heads = max(group, new_heads - new_heads % group)
        out["num_key_value_heads"] = new_heads // group
    out["num_attention_heads"] = new_heads
    out["hidden_size"] = new_heads * head_dim
    if "word_embed_proj_dim" in config:
        out["word_embed_proj_dim"] = out["hidden_size"]
    for key in ("intermediate_size", "ffn_dim"):
        if key in config:
            out[key] = max(8, 8 * round(config[key] * scale / 8))
    out["num_hidden_layers"] = max(1, round(config["num_hidden_layers"] * scale))
    return out


def build(
    config: dict[str, Any], device: torch.device | str, dtype: torch.dtype = torch.float32
) -> torch.nn.Module:
    """A randomly initialised causal LM of `config`, created on `device` in `dtype`."""
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = dict(config)
    model_type = kwargs.pop("model_type")
    hf_config = AutoConfig.for_model(model_type, **kwargs)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are created in dtype: no fp32 copy first
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(hf_config)
    finally:
        torch.set_default_dtype(default)
    return model


def parameter_count(config: dict[str, Any]) -> int:
    """Parameters of `config`, counted on the meta device (no memory, no init); each
    distinct config is built once per process (a suite's estimate asks for the same few
    shapes hundreds of times)."""
    return _parameter_count(json.dumps(config, sort_keys=True))


@functools.cache
def _parameter_count(config_json: str) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = json.loads(config_json)
    hf_config = AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    return sum(p.numel() for p in model.parameters())
