"""The suite's lm-eval tasks kept in the run directory load with lm-eval's own
TaskManager, offline, with the suite's prompts, stops and max_gen_toks (issue 35)."""

from __future__ import annotations

import json

import yaml

from bench.orchestrate.lm_eval_export import EXPORT, export_tasks
from bench.suite import load_suite


def test_the_run_keeps_task_folders_that_lm_eval_loads_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "data"
    data.mkdir()
    rows = [json.dumps({"prompt": f"{a} plus 1 is", "target": str(a + 1)}) for a in range(5)]
    for split in ("train", "dev", "test"):
        (data / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    entry = {"type": "jsonl", **{s: f"data/{s}.jsonl" for s in ("train", "dev", "test")}}
    suite = {
        "name": "mine",
        "models": ["tiny"],
        "tasks": {"math-mini": {"eval": {"max_gen_toks": 7}}, "sums": entry | {"stop": ["."]}},
        "methods": ["none"],
        "train": {"steps": 1, "batch_size": 2},
        "eval": {"limit": 3, "batch_size": 2, "max_gen_toks": 5},
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    _, specs = load_suite(str(path))
    run = tmp_path / "run"
    written = export_tasks(specs, run)
    root = run / EXPORT
    assert sorted(p.relative_to(root).as_posix() for p in written) == [
        "math-mini/hizfo_math_mini.yaml",
        "sums/hizfo_sums.yaml",
    ]
    for name in ("math-mini", "sums"):  # the shim the YAMLs' !function entries go through
        assert (root / name / "hizfo_task_functions.py").is_file()
    readme = (root / "README.md").read_text()
    assert f"--include_path {root} --tasks hizfo_sums --batch_size 2 --limit 3" in readme

    import lm_eval.tasks

    manager = lm_eval.tasks.TaskManager(include_path=str(root), include_defaults=False)
    assert {"hizfo_math_mini", "hizfo_sums"} <= set(manager.all_tasks)
    tasks = manager.load(["hizfo_math_mini", "hizfo_sums"])["tasks"]
    sums, math = tasks["hizfo_sums"], tasks["hizfo_math_mini"]
    assert sums.config.generation_kwargs["until"] == ["."]
    assert sums.config.generation_kwargs["max_gen_toks"] == 5
    assert math.config.generation_kwargs["max_gen_toks"] == 7  # the per-task override
    assert callable(math.config.process_results) or math.config.filter_list
    docs = list(sums.test_docs())
    assert [d["target"] for d in docs] == [str(a + 1) for a in range(5)]
    assert sums.doc_to_text(docs[0]) == "0 plus 1 is"


def test_lm_eval_cli_scores_a_checkpoint_as_the_suite_does(tmp_path, tiny):
    """`hizfo-bench tasks export` + lm-eval's own CLI on a saved checkpoint give the
    suite's per-document prompts, generations and scores (issue 35 item 1)."""
    import os
    import subprocess
    import sys

    from bench.cli import main
    from bench.evaluate import evaluate, per_document
    from bench.tasks import get_task

    model, tok = tiny
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    tok.save_pretrained(checkpoint)
    task = get_task("math-mini")
    ours = evaluate(model, tok, task, limit=6, batch_size=2, max_gen_toks=8)

    folder = tmp_path / "lm-tasks"
    args = ["tasks", "export", "math-mini", str(folder), "--max-gen-toks", "8", "--limit", "6"]
    assert main(args) == 0
    assert main(args) == 2  # the folder is not empty: refused without --force
    out = tmp_path / "lm-eval-out"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [sys.executable, "-m", "lm_eval", "--model", "hf"]
    command += ["--model_args", f"pretrained={checkpoint},dtype=float32", "--device", "cpu"]
    command += ["--include_path", str(folder), "--tasks", "hizfo_math_mini", "--limit", "6"]
    command += ["--batch_size", "2", "--log_samples", "--output_path", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (samples_file,) = out.rglob("samples_hizfo_math_mini_*.jsonl")
    logged = [json.loads(line) for line in samples_file.read_text().splitlines() if line]
    theirs = per_document(logged, task.metric)
    assert len(theirs) == len(ours.samples) == 6
    for a, b in zip(ours.samples, theirs, strict=True):
        assert (a["doc_id"], a["prompt"], a["target"]) == (b["doc_id"], b["prompt"], b["target"])
        assert a["generation"] == b["generation"]
        assert a["filtered"] == b["filtered"]
        assert a["metrics"] == b["metrics"]
