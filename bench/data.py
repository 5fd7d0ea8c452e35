"""Training data: tokenise (prompt, target) examples and draw seeded batches.

A training example is the prompt followed by its target and EOS; the loss covers the
target only. When the pair is longer than ``max_length`` the prompt loses tokens from
its LEFT, so the target always survives whole (lm-eval and trl keep the continuation
the same way); a target that cannot fit with at least one prompt token is an error,
raised before training by `truncation_counts` and never silently cut.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import torch

from bench.method import Batch
from bench.tasks.base import Example


class TargetTooLongError(ValueError):
    """A target (with its EOS) leaves no room for a prompt token within max_length."""


def _encode(ex: Example, tokenizer) -> tuple[list[int], list[int]]:
    prompt = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
    target = tokenizer(ex.target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt, target


def _too_long(target: list[int], max_length: int) -> TargetTooLongError:
    return TargetTooLongError(
        f"a target of {len(target)} tokens (with EOS) does not fit max_length {max_length} "
        "with a prompt token before it; raise train.max_length"
    )


def fit(prompt: list[int], target: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """(ids, labels) of prompt + target within `max_length`: the prompt is cut from the
    left, the target kept whole; labels are -100 on the prompt."""
    if len(target) >= max_length:
        raise _too_long(target, max_length)
    keep = min(len(prompt), max_length - len(target))
    prompt = prompt[len(prompt) - keep :]
    return prompt + target, [-100] * len(prompt) + target


def collate(
    examples: Sequence[Example], tokenizer, max_length: int, device: torch.device | str = "cpu"
) -> Batch:
    """Right-padded batch; labels are -100 on prompt and padding so loss covers targets only.

    The target ends with the tokenizer's EOS token so a tuned model learns to stop.
    A pair longer than `max_length` loses prompt tokens from the left (the target
    survives); a target that leaves no room for one prompt token raises
    TargetTooLongError.
    """
    eos = tokenizer.eos_token_id
    rows = [fit(*_encode(ex, tokenizer), max_length) for ex in examples]
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


@dataclass
class Truncation:
    """How many examples `collate` shortens at `max_length` (their prompts, from the left)."""

    examples: int
    prompt_truncated: int
    max_length: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def truncation_counts(examples: Sequence[Example], tokenizer, max_length: int) -> Truncation:
    """Count the examples whose prompt `collate` cuts; raise TargetTooLongError (one line,
    naming the first offending example) when a target alone does not fit, so a trial
    stops before training rather than on a batch without target tokens."""
    truncated = 0
    for i, ex in enumerate(examples):
        prompt, target = _encode(ex, tokenizer)
        if len(target) >= max_length:
            raise TargetTooLongError(f"example {i}: {_too_long(target, max_length)}")
        truncated += len(prompt) + len(target) > max_length
    return Truncation(len(examples), truncated, max_length)


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
