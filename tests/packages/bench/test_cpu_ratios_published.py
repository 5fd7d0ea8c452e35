"""The CPU step ratios that README.md and docs/performance.md quote (issue 33) are
regenerated from the committed rounds (results/perf/cpu-ratios-*/cpu_ratios.json) by
scripts/cpu_ratios.py: the ratios are recomputed from every round's seconds, not read."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import REPO

SCRIPT = REPO / "scripts" / "cpu_ratios.py"
RUNS = sorted((REPO / "results" / "perf").glob("cpu-ratios-*"))


@pytest.mark.parametrize("run", RUNS, ids=[r.name for r in RUNS])
def test_the_quoted_ratios_come_from_the_committed_rounds(run):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--table", str(run / "cpu_ratios.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == (run / "cpu_ratios.md").read_text()
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| before", "| after"))]
    assert rows and rows[-1].startswith("| after")
    for quoting in ("README.md", "docs/performance.md"):  # each quotes every row
        text = (REPO / quoting).read_text()
        for line in rows:
            assert line in text.splitlines(), (quoting, line)


def test_a_changed_round_changes_the_table(tmp_path):
    """The table is computed, not copied: one round's step made slower moves the ratio."""
    data = json.loads((RUNS[0] / "cpu_ratios.json").read_text())
    data["runs"]["after"][0]["methods"]["mezo"]["step"][0] *= 3
    changed = tmp_path / "cpu_ratios.json"
    changed.write_text(json.dumps(data))
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--table", str(changed)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout != (RUNS[0] / "cpu_ratios.md").read_text()


def test_bad_arguments_exit_2_and_write_nothing(tmp_path):
    for args in (["--batch", "8"], ["--batch", "0x64", "--out", str(tmp_path / "x")], []):
        done = subprocess.run(
            [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
