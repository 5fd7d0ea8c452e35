"""What a task is: training examples plus an lm-eval task that scores a model on it."""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml

_HERE = Path(__file__).parent
# lm-eval resolves `!function module.name` to `<yaml folder>/module.py`; the evaluator writes
# the YAML into a temporary folder, so a one-line shim there re-exports the real functions.
FUNCTIONS_SHIM = "hizfo_task_functions"
_TRUE = {"1", "ON", "YES", "TRUE"}


class TaskError(ValueError):
    """Bad task input; the message says what is wrong and how to fix it (one line)."""


class UnknownTaskError(TaskError):
    pass


class TaskUnavailableError(TaskError):
    """The task's data cannot be had here (hub data set in offline mode, no sandbox, ...)."""


class TaskDataError(TaskError):
    """A data file the task reads is malformed."""


@dataclass(frozen=True)
class Example:
    """One supervised training example: the loss is taken on `target` only."""

    prompt: str
    target: str


class _FunctionRef(str):
    """A `!function` tag kept verbatim through load and dump."""


class _Loader(yaml.SafeLoader):
    pass


class _Dumper(yaml.SafeDumper):
    pass


_Loader.add_constructor("!function", lambda loader, node: _FunctionRef(node.value))
_Dumper.add_representer(
    _FunctionRef, lambda dumper, value: dumper.represent_scalar("!function", str(value))
)


def hub_offline() -> bool:
    """Whether `datasets` will refuse to download (HF_DATASETS_OFFLINE wins over HF_HUB_OFFLINE)."""
    value = os.environ.get("HF_DATASETS_OFFLINE")
    if value is None:
        value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().upper() in _TRUE


class Task(ABC):
    """A task family member. Subclasses set the class attributes and the two data methods.

    The lm-eval side is data: a YAML template beside this module (``lm_eval_yaml``) whose
    ``dataset_kwargs.data_files`` the evaluator points at the documents this task writes.
    Hub tasks go through the same path: they download with `datasets` and write the same
    JSONL, so a hub task and its offline sibling share their YAML and metric code.
    """

    name: ClassVar[str]
    family: ClassVar[str]  # "math" | "code" | "generative"
    source: ClassVar[str]  # "offline" (works without network) | "hub"
    metric: ClassVar[str]  # lm-eval key of the primary score, e.g. "exact_match,strict-match"
    lm_eval_yaml: ClassVar[str]
    description: ClassVar[str] = ""
    # A task type (built from a suite entry, e.g. `type: jsonl`) sets its config dataclass
    # and the config keys that hold file paths (made absolute against the suite's folder);
    # it is then called as cls(name, config). A ready-to-use task leaves both unset.
    config_class: ClassVar[type | None] = None
    path_keys: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def train_examples(self) -> list[Example]:
        """Every training example available (a suite picks how many it uses)."""

    @abstractmethod
    def eval_documents(self) -> list[dict[str, Any]]:
        """The test documents the lm-eval template reads, in a fixed order. Scored once, at
        the end of a trial; nothing else may read them."""

    @abstractmethod
    def dev_examples(self) -> list[Example]:
        """Held-out supervised examples for the dev loss at evaluation points: disjoint from
        the training examples and from the test documents."""

    def dev_documents(self) -> list[dict[str, Any]]:
        """Dev documents in the test documents' format, for the dev score (generation
        through the same lm-eval template); [] when the task cannot score dev (then only
        the dev loss is measured)."""
        return []

    def check_available(self) -> None:
        """Raise a TaskError if this task cannot run here; called when a suite is validated,
        before any trial starts. Must be cheap for offline tasks."""
        return None

    def spec_config(self) -> dict[str, Any]:
        """What a trial spec keeps to rebuild this task in a worker (TrialSpec.task_config):
        {} for a registered task; a task type's name and resolved config otherwise."""
        return {}

    @classmethod
    def id_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """The part of a spec's ``task_config`` that names the trial (``TrialSpec.trial_id``):
        all of it by default. A type whose config holds a digest of its files leaves their
        paths out, so the same data in another folder keeps its trial ids."""
        return dict(config)

    def sizes(self) -> dict[str, int]:
        """Examples (train, dev) and documents (dev_scored, test) of each split."""
        return {
            "train": len(self.train_examples()),
            "dev": len(self.dev_examples()),
            "dev_scored": len(self.dev_documents()),
            "test": len(self.eval_documents()),
        }

    def lm_eval_config(self) -> dict[str, Any]:
        """The lm-eval task config: this task's YAML template (the evaluator fills in the
        task name, the data file and max_gen_toks)."""
        return yaml.load((_HERE / self.lm_eval_yaml).read_text(), Loader=_Loader)

    def write_lm_eval_task(self, folder: Path, *, max_gen_toks: int, split: str = "test") -> str:
        """Write this task's YAML and the `split` documents ("test" or "dev") into `folder`;
        return the lm-eval task name."""
        if split not in ("test", "dev"):
            raise ValueError(f"split must be 'test' or 'dev', not {split!r}")
        docs = self.eval_documents() if split == "test" else self.dev_documents()
        if not docs:
            raise TaskError(f"task {self.name} has no {split} documents to score")
        folder.mkdir(parents=True, exist_ok=True)
        data = folder / f"{self.name}-{split}.jsonl"
        with data.open("w") as f:
            for doc in docs:
                f.write(json.dumps(doc) + "\n")
        config = self.lm_eval_config()
        task_name = "hizfo_" + self.name.replace("-", "_")
        config["task"] = task_name
        config.setdefault("dataset_kwargs", {})["data_files"] = {"test": str(data)}
        config.setdefault("generation_kwargs", {})["max_gen_toks"] = max_gen_toks
        (folder / f"{FUNCTIONS_SHIM}.py").write_text(
            "from bench.tasks.lm_eval_functions import *  # noqa: F403\n"
        )
        (folder / f"{task_name}.yaml").write_text(
            yaml.dump(config, Dumper=_Dumper, sort_keys=False)
        )
        return task_name


class HubTask(Task):
    """A task whose data comes from a Hugging Face hub data set, loaded with `datasets`."""

    source = "hub"
    hub_path: ClassVar[str]
    hub_name: ClassVar[str | None] = None
    test_split: ClassVar[str] = "test"  # the split scored (SQuAD has only "validation")

    dev_split: ClassVar[str | None] = None  # the data set's validation split, if it has one
    dev_size: ClassVar[int] = 200  # else: this many examples cut from the end of train

    def load_split(self, split: str) -> list[dict[str, Any]]:
        return load_hub_split(self.hub_path, self.hub_name, split)

    def train_rows(self) -> list[dict[str, Any]]:
        """Training rows: the train split, minus the dev slice when dev comes from it."""
        rows = self.load_split("train")
        return rows if self.dev_split else rows[: -self.dev_size]

    def dev_rows(self) -> list[dict[str, Any]]:
        """Dev rows: the validation split, or a fixed slice at the end of train."""
        if self.dev_split:
            return self.load_split(self.dev_split)
        return self.load_split("train")[-self.dev_size :]

    def check_available(self) -> None:
        # Loading the test split is the only real check: it also passes offline when the
        # data set is already in the local `datasets` cache.
        self.load_split(self.test_split)


_HUB_CACHE: dict[tuple[str, str | None, str], list[dict[str, Any]]] = {}


def load_hub_split(path: str, name: str | None, split: str) -> list[dict[str, Any]]:
    """One split of a hub data set as a list of dicts, or a TaskUnavailableError that says why."""
    key = (path, name, split)
    if key not in _HUB_CACHE:
        import datasets

        label = path + (f" ({name})" if name else "")
        try:
            ds = datasets.load_dataset(path, name, split=split)
        except Exception as e:
            if hub_offline():
                raise TaskUnavailableError(
                    f"hub data set {label} is not in the local cache and offline mode is on; "
                    "set HF_DATASETS_OFFLINE=0 HF_HUB_OFFLINE=0 on a machine with network "
                    "(the data set is then cached for later offline runs)"
                ) from None
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TaskUnavailableError(
                f"could not load hub data set {label} split {split!r}: {first}; "
                "check the network connection (or pre-fill the `datasets` cache)"
            ) from None
        _HUB_CACHE[key] = [dict(row) for row in ds]
    return _HUB_CACHE[key]
