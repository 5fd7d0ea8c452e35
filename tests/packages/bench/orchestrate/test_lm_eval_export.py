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
