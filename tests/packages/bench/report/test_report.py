"""Reports from synthetic run dirs (trial JSONs written with store.write_trial; no training)."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest
from helpers.records import make_record, write_run

from bench import report, store
from bench.cli import main
from bench.report import plots


def hizfo_history(n_layers: int = 4, profiles: int = 3) -> list[dict[str, Any]]:
    """The shape Hi-ZFO's method_summary holds: one entry per importance profile."""
    out = []
    for j in range(profiles):
        importance = {"model.embed_tokens.weight": 0.01}
        for i in range(n_layers):
            for t in ("self_attn.q_proj.weight", "mlp.down_proj.weight"):
                importance[f"model.layers.{i}.{t}"] = (i + 1) * (j + 1) * 0.01
        importance["lm_head.weight"] = 0.05
        fo = [f"model.layers.{n_layers - 1}.mlp.down_proj.weight"]
        fo += [f"model.layers.{n_layers - 1 - j}.self_attn.q_proj.weight"] if j else []
        out.append({"step": 10 * j, "importance": importance, "fo": fo})
    return out


def full_run(tmp_path):
    records = []
    for seed in (0, 1):
        records += [
            make_record("none", seed=seed, score=0.1, train_seconds=0.0, peak_memory_bytes=0),
            make_record("fo-adamw", seed=seed, score=0.40 + 0.02 * seed, train_seconds=100.0),
            make_record("mezo", seed=seed, score=0.30, train_seconds=50.0 + seed),
            make_record(
                "hizfo",
                seed=seed,
                score=0.45,
                train_seconds=80.0,
                method_summary={"profiles": hizfo_history()},
            ),
        ]
    records.append(make_record("mezo", seed=2, status="failed"))
    return write_run(tmp_path / "run", records)


def test_main_table_cells_best_and_relative_time(tmp_path):
    run = full_run(tmp_path)
    frame = report.trial_frame(store.read_trials(run))
    (table,) = report.main_tables(frame)
    rows = {r.method: r for r in table.rows}
    assert [r.method for r in table.rows] == ["none", "fo-adamw", "mezo", "hizfo"]
    assert rows["hizfo"].cells["math-mini"].best
    assert not rows["fo-adamw"].cells["math-mini"].best
    assert rows["fo-adamw"].cells["math-mini"].mean == pytest.approx(0.41)
    assert rows["mezo"].relative_time == pytest.approx(50.5 / 100)
    assert rows["fo-adamw"].relative_time == pytest.approx(1.0)
    mezo = rows["mezo"].cells["math-mini"]
    assert (mezo.n_ok, mezo.n_failed) == (2, 1)
    assert mezo.text() == "30.0 ± 0.0 (1/3 failed)"

    md = report.render_markdown([table])
    assert "**45.0 ± 0.0**" in md  # best in bold
    assert "| mezo | 30.0 ± 0.0 (1/3 failed) | 50.5 s | 0.51× | 512 MiB |" in md
    assert "Failed trials (1)" in md and "mezo__math-mini__tiny__s2" in md

    tex = report.render_latex([table])
    assert "\\toprule" in tex and "\\cmidrule(lr){2-2}" in tex and "\\bottomrule" in tex
    assert "\\textbf{45.0 $\\pm$ 0.0}" in tex
    assert "fo-adamw" in tex and "fo\\_adamw" not in tex  # hyphens need no escaping
    assert report.tex_escape("a_b & 50%") == "a\\_b \\& 50\\%"

    rows_csv = list(csv.DictReader(io.StringIO(report.render_csv([table]))))
    mezo_csv = next(r for r in rows_csv if r["method"] == "mezo")
    assert mezo_csv["math/math-mini n_failed"] == "1"
    assert float(mezo_csv["time_relative_to_fo-adamw"]) == pytest.approx(0.505)
    assert next(r for r in rows_csv if r["method"] == "hizfo")["best_in"] == "math-mini"


def test_one_seed_one_method_no_baseline(tmp_path):
    run = write_run(tmp_path / "run", [make_record("mezo", score=0.25, train_seconds=30.0)])
    (table,) = report.main_tables(report.trial_frame(store.read_trials(run)))
    md = report.render_markdown([table])
    row = next(line for line in md.splitlines() if line.startswith("| mezo"))
    assert row == "| mezo | **25.0** | 30.0 s | - | 512 MiB |"  # no std, relative time "-"
    assert "±" not in row


def test_all_failed_method_is_shown_not_dropped(tmp_path):
    run = write_run(
        tmp_path / "run",
        [make_record("fo-adamw"), make_record("mezo", status="failed", train_seconds=None)],
    )
    md = report.render_markdown(report.main_tables(report.trial_frame(store.read_trials(run))))
    assert "| mezo | failed | - | - | - |" in md


def test_tasks_grouped_by_family(tmp_path, monkeypatch):
    families = {"math-mini": "math", "code-x": "code", "gen-y": "generative", "alg-z": "math"}
    monkeypatch.setattr(report.tables, "task_family", lambda t, records=(): families[t])
    run = write_run(
        tmp_path / "run",
        [make_record("fo-adamw", task=t, score=0.1 * (i + 1)) for i, t in enumerate(families)],
    )
    (table,) = report.main_tables(report.trial_frame(store.read_trials(run)))
    assert table.columns == [
        ("math", "alg-z"),
        ("math", "math-mini"),
        ("code", "code-x"),
        ("generative", "gen-y"),
    ]
    tex = report.render_latex([table])
    assert "\\multicolumn{2}{c}{Math}" in tex and "\\cmidrule(lr){2-3}" in tex
    assert "| method | math / alg-z | math / math-mini | code / code-x |" in (
        report.render_markdown([table])
    )
    assert table.rows[0].average == pytest.approx(0.25)


def test_layer_matrices_from_a_hizfo_history():
    layers, steps, importance, fo = plots.layer_matrices(hizfo_history(n_layers=4, profiles=3))
    assert layers == ["embeddings", "layer 0", "layer 1", "layer 2", "layer 3", "lm head"]
    assert steps == [0, 10, 20]
    assert importance.max(axis=0).tolist() == [1.0, 1.0, 1.0]  # normalised per profile
    assert importance[layers.index("layer 3"), 0] == 1.0
    assert fo[layers.index("layer 3")].tolist() == [0.5, 0.5, 0.5]  # 2 tensors per layer
    assert fo[layers.index("layer 2")].tolist() == [0.0, 0.5, 0.0]
    assert fo[layers.index("layer 0")].tolist() == [0.0, 0.0, 0.0]
    assert fo[layers.index("layer 1")].tolist() == [0.0, 0.0, 0.5]
    assert plots.layer_of("model.decoder.layers.11.fc1.weight") == "layer 11"
    assert plots.layer_of("transformer.h.3.attn.c_attn.weight") == "layer 3"


def test_profile_history_found_under_any_key():
    history = hizfo_history()
    assert plots.profile_history(make_record("hizfo", method_summary={"w": history})) == history
    assert plots.profile_history(make_record("hizfo", method_summary={"fo_tensors": 3})) == []
    assert plots.profile_history(make_record("hizfo", method_summary=None)) == []


def test_cli_report_writes_tables_and_plots(tmp_path, capsys):
    run = full_run(tmp_path)
    assert main(["report", str(run)]) == 0
    out = run / "report"
    for name in ("table.md", "table.tex", "table.csv"):
        assert (out / name).stat().st_size > 0
    pngs = {p.name for p in (out / "plots").glob("*.png")}
    assert {
        "loss_math-mini.png",
        "score_vs_time.png",
        "peak_memory.png",
        "hizfo_importance_math-mini_tiny_s0.png",
    } <= pngs
    assert {p.stem for p in (out / "plots").glob("*.pdf")} == {p[:-4] for p in pngs}
    assert "mezo" in capsys.readouterr().out


def test_cli_report_history_over_runs(tmp_path, capsys):
    runs = tmp_path / "nightly"
    for day in (1, 2, 3):
        write_run(
            runs / f"night-{day}",
            [
                make_record("fo-adamw", started_at=f"2026-01-0{day}T03:00:00+0000"),
                make_record(
                    "mezo",
                    train_seconds=50.0 * day,
                    started_at=f"2026-01-0{day}T03:10:00+0000",
                    status="failed" if day == 2 else "ok",
                ),
            ],
        )
    assert main(["report", str(runs)]) == 0
    out = runs / "report"
    assert (out / "plots" / "history.png").exists() and (out / "plots" / "history.pdf").exists()
    history = list(csv.DictReader((out / "history.csv").open()))
    assert len(history) == 6
    mezo = [float(r["train_seconds"]) for r in history if r["method"] == "mezo" and r["score"]]
    assert mezo == [50.0, 150.0]
    assert re.search(r"history of 3 runs", capsys.readouterr().out)


def test_cli_report_rejects_a_non_run(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_paper_suite_dry_run_lists_trials_offline(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["run", "--suite", "paper", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    # The final trials after the tuning of the ZO rates (hizfo's zo_lr, mezo[hizfo-budget]'s
    # lr: 8 points x 16 (model, task) each), which the dry run lists first.
    assert out[0].startswith("suite paper: 528 trials after 256 tuning trials")
    trials = [line.split()[-1] for line in out if line.strip().startswith("[todo]")]
    assert len(trials) == 528 + 256  # 11 methods x 4 models x 4 tasks x 3 seeds
    assert {t.split("__")[0] for t in trials} == {
        "none",
        "fo-adamw",
        "mezo",
        "lora",
        "hizfo",
        "addax",
        "hizfo[zo-off]",
        "hizfo[random]",
        "mezo[hizfo-budget]",
        "mezo-gv",  # plugins/mezo-gv, at its paper's settings (not tuned)
        "mezo-greedy",
    }
    assert {t.split("__")[1] for t in trials} == {"gsm8k", "mbpp", "humaneval", "squad"}
    assert any("__opt_13b__" in t for t in trials)
    # a real run still refuses hub models offline, before anything starts
    assert main(["run", "--suite", "paper", "--out", "/nonexistent/paper"]) == 2
    assert "hub" in capsys.readouterr().err  # the hub model or hub data set, whichever first


def test_nightly_suite_is_small():
    from bench.suite import load_suite

    name, specs = load_suite("nightly")
    assert name == "nightly" and {s.model for s in specs} == {"tiny"}
    assert {s.method for s in specs} == {"none", "fo-adamw", "mezo", "lora", "hizfo"}
    assert all(s.train.steps <= 400 and s.eval.limit <= 32 for s in specs)


def test_a_run_of_tuning_trials_only_reports(tmp_path):
    """A tuning run stopped before its final trials (only phase-tune records, no test
    score) still gets its report: tuning.md and the tables, no crash in the plots."""
    import json

    records = []
    for i, lr in enumerate((1e-5, 1e-4)):
        r = make_record(
            "mezo",
            score=None,
            config={"phase": "tune", "tuning_point": {"lr": lr}},
            eval_curve=[{"step": 20, "seconds": 1.0, "dev_loss": 1.0 + i}],
            digest=f"{i:08d}",
        )
        records.append(r)
    write_run(tmp_path, records)
    (tmp_path / "tuning.json").write_text(
        json.dumps(
            {
                "metric": "dev_loss",
                "budget": 2,
                "seeds": [0],
                "spaces": {"mezo": {"lr": {"log_uniform": [1e-5, 1e-4]}}},
                "choices": [
                    {
                        "method": "mezo",
                        "task": "math-mini",
                        "model": "tiny",
                        "budget": 2,
                        "chosen": {"lr": 1e-5},
                        "dev_value": 1.0,
                        "tried": [
                            {"settings": {"lr": 1e-5}, "dev_value": 1.0, "seeds": 1},
                            {"settings": {"lr": 1e-4}, "dev_value": 2.0, "seeds": 1},
                        ],
                    }
                ],
            }
        )
    )
    assert main(["report", str(tmp_path)]) == 0
    assert "lr=1e-05 (chosen)" in (tmp_path / "report" / "tuning.md").read_text()


def test_a_suite_defined_task_sits_under_its_declared_family():
    """A jsonl task with family: math is a math column, not 'other' (issue 35)."""
    config = {"type": "jsonl", "family": "math", "metric": "exact_match"}
    records = [
        make_record(m, task="sums", digest=m, config={"method": m, "task_config": config})
        for m in ("fo-adamw", "mezo")
    ]
    records.append(make_record("fo-adamw", task="math-mini", digest="mm"))
    (table,) = report.main_tables(report.trial_frame(records), records)
    assert table.columns == [("math", "math-mini"), ("math", "sums")]
    (without,) = report.main_tables(report.trial_frame(records))
    assert ("other", "sums") in without.columns
