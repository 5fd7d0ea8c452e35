"""Train, dev and test are disjoint for every task, and only dev feeds evaluation points."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench.tasks import get_task
from bench.tasks.base import HubTask
from bench.tasks.gsm8k import Gsm8k
from bench.tasks.math_mini import MathMini


def _prompts(examples):
    return {e.prompt for e in examples}


@pytest.mark.parametrize("name", ["math-mini", "docstring-summary", "humaneval"])
def test_offline_splits_are_disjoint_and_non_empty(name):
    task = get_task(name)
    train, dev = _prompts(task.train_examples()), _prompts(task.dev_examples())
    assert train and dev
    assert not train & dev
    test_docs = task.eval_documents()
    # The test side in the prompt form the training side uses.
    if name == "math-mini":
        test = {f"Question: {d['question']}\nAnswer:" for d in test_docs}
    elif name == "docstring-summary":
        test = {d["prompt"] for d in test_docs}
    else:  # HumanEval: no test problem's entry point is ever a train or dev target's name
        names = {d["entry_point"] for d in test_docs}
        assert not any(f"def {n}(" in p for n in names for p in train | dev)
        return
    assert not (train | dev) & test


def test_dev_documents_are_the_dev_examples():
    task = MathMini()
    docs = task.dev_documents()
    assert [f"Question: {d['question']}\nAnswer:" for d in docs] == [
        e.prompt for e in task.dev_examples()
    ]


_SPLIT_DIGEST = """
import hashlib, json, sys
from bench.tasks import get_task
task = get_task(sys.argv[1])
parts = [[e.prompt + e.target for e in task.train_examples()],
         [e.prompt + e.target for e in task.dev_examples()],
         [json.dumps(d, sort_keys=True, default=str) for d in task.eval_documents()]]
print(hashlib.sha256(json.dumps(parts).encode()).hexdigest())
"""


@pytest.mark.parametrize("name", ["math-mini", "docstring-summary"])
def test_splits_are_deterministic(name, tmp_path):
    """Two fresh processes, each with its own empty data cache and another hash seed,
    build the same train, dev and test splits (nothing cached is compared with itself)."""
    digests = []
    for run in ("a", "b"):
        env = {
            **os.environ,
            "HIZFO_BENCH_CACHE": str(tmp_path / run),
            "PYTHONHASHSEED": {"a": "1", "b": "2"}[run],
        }
        out = subprocess.run(
            [sys.executable, "-c", _SPLIT_DIGEST, name],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        digests.append(out.stdout.strip())
    assert len(digests[0]) == 64 and digests[0] == digests[1]


def test_humaneval_has_a_dev_loss_but_no_dev_score(tmp_path):
    task = get_task("humaneval")
    assert task.dev_examples() and task.dev_documents() == []
    with pytest.raises(Exception, match="no dev documents"):
        task.write_lm_eval_task(tmp_path, max_gen_toks=8, split="dev")


def test_dev_task_file_holds_dev_documents_only(tmp_path):
    task = MathMini()
    task.write_lm_eval_task(tmp_path, max_gen_toks=8, split="dev")
    lines = (tmp_path / "math-mini-dev.jsonl").read_text().splitlines()
    assert len(lines) == len(task.dev_documents())
    test_questions = {d["question"] for d in task.eval_documents()}
    assert not any(q in line for q in test_questions for line in lines[:20])


def test_hub_task_without_validation_cuts_dev_from_the_end_of_train(monkeypatch):
    rows = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(1000)]
    monkeypatch.setattr(HubTask, "load_split", lambda self, split: rows if split == "train" else [])
    task = Gsm8k()
    train, dev = task.train_examples(), task.dev_examples()
    assert len(dev) == task.dev_size and len(train) == 1000 - task.dev_size
    assert not _prompts(train) & _prompts(dev)
    assert [d["question"] for d in task.dev_documents()] == [f"q{i}" for i in range(800, 1000)]
