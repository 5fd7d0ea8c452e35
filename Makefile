# The commands of the README's quick start:
#   make smoke    a first look: every method and measurement on the tiny model (~45 s once set up)
#   make run      set up .venv, prepare the embedded model, run the default suite, print the table
#   make test     set up .venv, run ruff (lint + format), mypy and the tests
#   make nightly  the nightly regression check (docs/reports.md): the nightly suite, the
#                 accuracy trial and perf into one run dir, then compare with the reference
#   make lock     rewrite requirements.lock from the versions installed in .venv
#                 (docs/design.md, "Dependencies")
VENV ?= .venv
SUITE ?= mini
BIN := $(VENV)/bin
REFERENCE ?= results/reference/nightly
HISTORY ?= results/history
# The nightly run dir; default results/runs/nightly-<time> (a fresh one each time).
NIGHTLY_OUT ?=

.PHONY: setup run test lint smoke nightly lock

# The plugins' pyproject files too: a changed entry point needs a reinstall; and the
# lock: a moved version is installed.
$(VENV)/.installed: pyproject.toml requirements.lock scripts/setup.sh scripts/ensure-sandbox.sh $(wildcard plugins/*/pyproject.toml)
	VENV=$(VENV) bash scripts/setup.sh

setup: $(VENV)/.installed

run: setup
	$(BIN)/hizfo-bench run --suite $(SUITE)

smoke: setup
	$(BIN)/hizfo-bench run --suite smoke

# Fails when compare finds a regression or cannot compare (make then exits 2); the
# verdict is in <run>/report/compare.json. File a passing run with `hizfo-bench history add <run>`.
nightly: setup
	@set -e; out="$(NIGHTLY_OUT)"; out="$${out:-results/runs/nightly-$$(date +%Y%m%d-%H%M%S)}"; \
	echo "nightly: $$out"; \
	$(BIN)/hizfo-bench run --suite nightly --out "$$out"; \
	$(BIN)/hizfo-bench run --suite $(REFERENCE)/accuracy.yaml --out "$$out"; \
	$(BIN)/hizfo-bench perf --repeats 3 --max-repeats 3 --warmup 1 --no-naive --methods mezo,fo-adamw,hizfo --out "$$out"; \
	$(BIN)/hizfo-bench compare $(REFERENCE) "$$out" --history $(HISTORY)

# No dependency on setup: the lock is written from what .venv has now.
lock:
	$(BIN)/python scripts/lock.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy  # the files and settings: [tool.mypy] in pyproject.toml

test: lint
	$(BIN)/pytest -q
