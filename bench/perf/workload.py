"""The model and the batch every phase of `hizfo-bench perf` runs on, and the memory
window of a phase.

Memory (one window per phase, bench.measure.memory.MemoryMeter):
- GPU: ``torch.cuda.max_memory_allocated`` with the peak reset before the phase; it
  includes the weights.
- CPU: the peak resident set size (VmHWM, reset by writing 5 to /proc/self/clear_refs)
  minus the resident size when the phase starts, plus the bytes of the model's
  parameters and buffers; so both devices report weights + what the phase adds. Before
  each phase the garbage collector runs and glibc's ``malloc_trim(0)`` hands freed heap
  pages back to the kernel: otherwise a phase could reuse pages an earlier phase left
  resident and look smaller than it is. bench.models.load copies the weights into
  anonymous memory once after loading, because transformers may map them from the file
  lazily, and a phase that touched them first would count them as its own.
"""

from __future__ import annotations

from typing import Any

import torch

from bench import model_configs
from bench.measure.memory import MemoryMeter, release_freed_memory, tensor_bytes
from bench.method import Batch
from bench.perf.settings import PerfSettings


def model_bytes(model: torch.nn.Module) -> int:
    """Parameters and buffers, each storage once (tied weights)."""
    return tensor_bytes([*model.parameters(), *model.buffers()])


class PhaseMemory:
    """Peak memory of one phase, weights included on both devices (MemoryMeter)."""

    def __init__(self, device: torch.device, model: torch.nn.Module) -> None:
        release_freed_memory()
        self.meter = MemoryMeter(device)
        self.meter.start(model_bytes(model))

    def read(self) -> dict[str, Any]:
        return self.meter.read()


def model_scale(settings: PerfSettings, device: torch.device) -> float:
    """The scale a model_config is built at: settings.scale, else 1 on GPU and
    model_configs.CPU_SCALE on CPU."""
    if settings.scale is not None:
        return settings.scale
    return 1.0 if device.type == "cuda" else model_configs.CPU_SCALE


def model_label(settings: PerfSettings, device: torch.device) -> str:
    """How the model is named in rows, records and trial ids: the source, or
    "config:NAME" with "@SCALE" when the shape is reduced; with ":BATCHxLENGTH" after it
    when the batch is not the default 8 x 64 (--paper-batch: ":16x512"), so that
    `compare` never matches records of different token counts."""
    if settings.model_config is None:
        label = settings.model
    else:
        scale = model_scale(settings, device)
        label = f"config:{settings.model_config}" + (f"@{scale:g}" if scale != 1 else "")
    batch = (settings.batch_size, settings.seq_len)
    default = (PerfSettings.batch_size, PerfSettings.seq_len)
    return label if batch == default else f"{label}:{batch[0]}x{batch[1]}"


def load_model(settings: PerfSettings, device: torch.device) -> torch.nn.Module:
    """A fresh model: a model_config built with random init on the device (at its
    scale), else bench.models.load of settings.model."""
    dtype = getattr(torch, settings.dtype)
    if settings.model_config is not None:
        config = model_configs.scaled(
            model_configs.resolve(settings.model_config), model_scale(settings, device)
        )
        return model_configs.build(config, device, dtype)
    from bench import models

    model, _, _ = models.load(settings.model, dtype=settings.dtype, device=device)
    return model


def make_batch(
    model: torch.nn.Module, batch_size: int, seq_len: int, device: torch.device
) -> Batch:
    """Random token ids of full length, labels on every token (speed does not depend on
    the tokens), the same for every phase (seed 0)."""
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(
        0, vocab, (batch_size, seq_len), generator=torch.Generator().manual_seed(0)
    ).to(device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
