"""Training data: tokenise (prompt, target) examples and draw seeded batches."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch

from bench.method import Batch
from bench.tasks.base import Example


def collate(
    examples: Sequence[Example], tokenizer, max_length: int, device: torch.device | str = "cpu"
) -> Batch:
    """Right-padded batch; labels are -100 on prompt and padding so loss covers targets only.

    The target ends with the tokenizer's EOS token so a tuned model learns to stop.
    Sequences longer than `max_length` are cut from the right.
    """
    eos = tokenizer.eos_token_id
    rows: list[tuple[list[int], list[int]]] = []
    for ex in examples:
        prompt = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
        target = tokenizer(ex.target, add_special_tokens=False)["input_ids"] + [eos]
        ids = (prompt + target)[:max_length]
        labels = ([-100] * len(prompt) + target)[:max_length]
        rows.append((ids, labels))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(ids)] = 1
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": mask.to(device),
        "labels": labels.to(device),
    }


def batch_stream(
    examples: Sequence[Example], batch_size: int, seed: int
) -> Iterator[list[Example]]:
    """Endless seeded epochs of shuffled batches (the last short batch of an epoch is dropped)."""
    if len(examples) < batch_size:
        raise ValueError(f"{len(examples)} training examples cannot fill a batch of {batch_size}")
    rng = random.Random(seed)
    order = list(range(len(examples)))
    while True:
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield [examples[i] for i in order[start : start + batch_size]]
