"""The plugin guide is executable: the files of docs/methods.md's smallest complete plugin,
extracted exactly as written, build a distribution that installs, registers and runs."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

GUIDE = REPO / "docs" / "methods.md"
# A fenced block with a title: ```toml title="hello-sgd/pyproject.toml"
BLOCK = re.compile(r'^```\w+ title="([^"]+)"\n(.*?)^```$', re.M | re.S)


def guide_files() -> dict[str, str]:
    """Path -> text of every titled code block of the guide, exactly as written."""
    return {path: text for path, text in BLOCK.findall(GUIDE.read_text())}


def test_the_guide_names_a_whole_distribution():
    files = guide_files()
    assert set(files) == {
        "hello-sgd/pyproject.toml",
        "hello-sgd/hizfo_bench_hello_sgd/__init__.py",
        "hello-sgd/hizfo_bench_hello_sgd/method.py",
        "hello-sgd/hello.yaml",
    }
    assert 'version = "0.1.0"' in files["hello-sgd/pyproject.toml"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The guide's files written out and installed into a folder of their own (pip
    --target: the shared venv is left alone); yields (folder of the files, site dir)."""
    root = tmp_path_factory.mktemp("guide")
    for path, text in guide_files().items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    site = root / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check"]
    cmd += ["-q", "--target", str(site)]
    if importlib.util.find_spec("setuptools") is not None:
        cmd += ["--no-index", "--no-build-isolation"]  # offline, as scripts/setup.sh
    done = subprocess.run([*cmd, str(root / "hello-sgd")], capture_output=True, text=True)
    assert done.returncode == 0, f"pip install of the guide's plugin failed:\n{done.stderr}"
    return root, site


def _env(site: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def test_the_guides_plugin_is_listed(installed):
    _, site = installed
    cli = Path(sys.executable).parent / "hizfo-bench"
    done = subprocess.run(
        [str(cli), "methods"], capture_output=True, text=True, env=_env(site), timeout=300
    )
    assert done.returncode == 0, done.stderr
    line = next((x for x in done.stdout.splitlines() if "hello-sgd" in x), "")
    assert "hizfo_bench_hello_sgd:HelloSGD" in line, done.stdout


@pytest.mark.integration
def test_the_guides_suite_runs_the_plugin_on_the_tiny_model(installed):
    root, site = installed
    code = f"""
import json, torch
torch.set_num_threads(1)
from bench.suite import load_suite
from bench.train.recipe import run_trial
name, specs = load_suite({str(root / "hello-sgd" / "hello.yaml")!r})
record = run_trial(specs[0])
print(json.dumps({{k: record[k] for k in ("status", "error", "steps", "passes", "curve")}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(site), timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["status"] == "ok", record["error"]
    assert record["steps"] == 2 and record["passes"] == {"forward": 2, "backward": 2}
    assert len(record["curve"]) == 2
