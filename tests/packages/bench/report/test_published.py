"""The README's published blocks are regenerated from committed run directories: they match
when the runs support them, and a changed trial file makes the check fail."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers.records import make_record, write_run

from bench.cli import main
from bench.report.published import extract, find_blocks, render_blocks

REPO = Path(__file__).resolve().parents[4]


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "published"
    write_run(
        root / "tiny",
        [make_record(m, seed=0, score=s) for m, s in (("fo-adamw", 0.5), ("mezo", 0.25))],
    )
    return root


def _readme(tmp_path: Path, root: Path) -> Path:
    readme = tmp_path / "README.md"
    readme.write_text(
        "# x\n\n<!-- published: tiny report/table.md#table -->\nstale\n<!-- /published -->\nend\n"
    )
    assert main(["published", str(readme), "--root", str(root), "--write"]) == 0
    return readme


def test_a_block_is_regenerated_from_the_trial_files_and_a_changed_number_fails(tmp_path, capsys):
    root = _root(tmp_path)
    readme = _readme(tmp_path, root)
    text = readme.read_text()
    assert "| fo-adamw |" in text and "50.0" in text and text.endswith("<!-- /published -->\nend\n")
    assert main(["published", str(readme), "--root", str(root)]) == 0
    assert "1 block(s) match" in capsys.readouterr().out
    # A number deleted from a trial file: the README no longer matches the runs.
    trial = next((root / "tiny" / "trials").glob("mezo*.json"))
    record = json.loads(trial.read_text())
    record["score"] = 0.3
    trial.write_text(json.dumps(record))
    assert main(["published", str(readme), "--root", str(root)]) == 1
    assert "differ from the runs: tiny report/table.md#table" in capsys.readouterr().out


def test_bad_blocks_are_one_line_errors(tmp_path, capsys):
    root = _root(tmp_path)
    readme = tmp_path / "R.md"
    readme.write_text("<!-- published: nowhere report/table.md -->\nx\n<!-- /published -->\n")
    assert main(["published", str(readme), "--root", str(root)]) == 2
    assert "not a published run directory" in capsys.readouterr().err
    readme.write_text("<!-- published: tiny report/table.md#nope -->\nx\n<!-- /published -->\n")
    assert main(["published", str(readme), "--root", str(root)]) == 2
    assert "unknown part #nope" in capsys.readouterr().err


def test_parts_of_claims_md():
    text = (
        "# t\n\n| claim | verdict | per task |\n|---|---|---|\n| a | b | c |\n\n## x\n\n"
        "### Dose-response (claim 3)\n\n| method | zo_lr |\n|---|---|\n| h | 1 |\n\nend\n"
    )
    assert (
        extract(text, "summary") == "| claim | verdict | per task |\n|---|---|---|\n| a | b | c |\n"
    )
    assert extract(text, "dose-response") == "| method | zo_lr |\n|---|---|\n| h | 1 |\n"
    with pytest.raises(ValueError, match="no summary part"):
        extract("nothing\n", "summary")


def test_the_readme_quotes_only_committed_runs():
    """Every run the README quotes is committed under results/published/, and the README's
    blocks are what `hizfo-bench report` makes of them today."""
    text = (REPO / "README.md").read_text()
    blocks = find_blocks(text)
    assert {b.run for b in blocks} >= {"mini", "claims-zo"}
    new, changed = render_blocks(text, REPO / "results" / "published")
    assert changed == [], f"README blocks differ from the committed runs: {changed}"


def test_deleting_a_number_from_a_committed_run_fails_the_readme_check(tmp_path):
    root = tmp_path / "published"
    shutil.copytree(REPO / "results" / "published" / "mini", root / "mini")
    text = (REPO / "README.md").read_text()
    readme_blocks = [b for b in find_blocks(text) if b.run == "mini"]
    assert readme_blocks
    trial = next(p for p in (root / "mini" / "trials").glob("fo-adamw*.json"))
    record = json.loads(trial.read_text())
    del record["score"]
    record["score"] = None
    trial.write_text(json.dumps(record))
    only_mini = "".join(
        f"<!-- published: mini {b.file}{'#' + b.part if b.part else ''} -->\n{b.body}"
        "<!-- /published -->\n"
        for b in readme_blocks
    )
    assert render_blocks(only_mini, root)[1] != []


def test_publish_keeps_the_evidence_and_refuses_to_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    write_run(run, [make_record("fo-adamw", seed=0, score=0.5)])
    for junk in ("logs", "progress", "checkpoints"):
        (run / junk).mkdir()
    (run / "targets.json").write_text("{}")
    root = tmp_path / "published"
    assert main(["published", "--add", str(run), "--name", "r1", "--root", str(root)]) == 0
    kept = {p.name for p in (root / "r1").iterdir()}
    assert kept == {"trials", "targets.json", "report"}
    assert (root / "r1" / "report" / "table.md").is_file()
    assert main(["published", "--add", str(run), "--name", "r1", "--root", str(root)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["published", "--add", str(run), "--name", "../x", "--root", str(root)]) == 2
