"""Shared fixtures. Everything runs offline; built-in models live in the normal cache."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the built-in tiny model; tests must not change it (use tiny_fresh)."""
    from bench import models

    model, tokenizer, _ = models.load("tiny")
    return model, tokenizer


@pytest.fixture
def tiny_fresh():
    from bench import models

    model, tokenizer, _ = models.load("tiny")
    return model, tokenizer


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the whole session (starting one takes seconds)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    """Tests run tiny models: intra-op threads gain nothing, and on a busy 2-core box each
    parallel op waits for a descheduled worker (measured: 0.2 s -> 20 s for one test).
    Ray workers set their own thread count from the CPUs they were given."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
