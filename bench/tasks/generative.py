"""Generative tasks: docstring-summary offline (stdlib docstrings) and SQuAD from the hub.

docstring-summary: given the body of a docstring from the Python standard library, write
the one-sentence summary its author put on the first line. Both sides are real English by
Python's maintainers, the summary is abstractive but anchored in the text (so a reference
metric means something), and it ships with every Python. Scored by ROUGE-L (primary),
SQuAD token F1 and exact match. The split is by a hash of the summary, so a summary shared
by two docstrings never sits on both sides.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from bench.tasks.base import Example, HubTask, Task
from bench.tasks.stdlib_corpus import corpus, split_by_hash

SUMMARY_TEST_SIZE = 200


def summary_prompt(doc: dict[str, Any]) -> str:
    return f"Documentation of the Python {doc['kind']} {doc['name']}: {doc['text']}\nOne-sentence summary:"


@cache
def _summary_splits() -> tuple[tuple[dict[str, Any], ...], tuple[dict[str, Any], ...]]:
    docs = [
        {**d, "prompt": summary_prompt(d)}
        for d in sorted(corpus()["docstrings"], key=lambda d: d["summary"])
    ]
    train, test = split_by_hash(docs, "summary", SUMMARY_TEST_SIZE, salt="docstring-summary")
    return tuple(train), tuple(test)


class DocstringSummary(Task):
    name = "docstring-summary"
    family = "generative"
    source = "offline"
    metric = "rougeL,none"
    lm_eval_yaml = "docstring_summary.yaml"
    description = "Summarise a Python stdlib docstring in one sentence; ROUGE-L vs the author's"

    def train_examples(self) -> list[Example]:
        return [
            Example(prompt=d["prompt"], target=f" {d['summary']}") for d in _summary_splits()[0]
        ]

    def eval_documents(self) -> list[dict[str, Any]]:
        keep = ("name", "kind", "module", "prompt", "summary")
        return [{k: d[k] for k in keep} for d in _summary_splits()[1]]


def squad_prompt(doc: dict[str, Any]) -> str:
    return (
        f"Title: {doc['title']}\nBackground: {doc['context']}\nQuestion: {doc['question']}\nAnswer:"
    )


class Squad(HubTask):
    name = "squad"
    family = "generative"
    metric = "f1,none"
    lm_eval_yaml = "squad.yaml"
    description = "SQuAD v1.1 (hub rajpurkar/squad) as generative QA; F1 and exact match"
    hub_path = "rajpurkar/squad"
    test_split = "validation"

    def train_examples(self) -> list[Example]:
        return [
            Example(prompt=squad_prompt(d), target=f" {d['answers']['text'][0]}")
            for d in self.load_split("train")
        ]

    def eval_documents(self) -> list[dict[str, Any]]:
        keep = ("id", "title", "context", "question")
        return [
            {**{k: d[k] for k in keep}, "answers": {"text": list(d["answers"]["text"])}}
            for d in self.load_split(self.test_split)
        ]
