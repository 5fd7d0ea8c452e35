"""What a task is: training examples plus an lm-eval task that scores a model on it."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml

_HERE = Path(__file__).parent


@dataclass(frozen=True)
class Example:
    """One supervised training example: the loss is taken on `target` only."""

    prompt: str
    target: str


class Task(ABC):
    """A task family member. Subclasses set the class attributes and the two data methods.

    The lm-eval side is data: a YAML template beside this module (``lm_eval_yaml``) whose
    ``dataset_kwargs.data_files`` the evaluator points at the documents this task writes.
    """

    name: ClassVar[str]
    family: ClassVar[str]  # "math" | "code" | "generative"
    source: ClassVar[str]  # "offline" (works without network) | "hub"
    metric: ClassVar[str]  # lm-eval key of the primary score, e.g. "exact_match,strict-match"
    lm_eval_yaml: ClassVar[str]
    description: ClassVar[str] = ""

    @abstractmethod
    def train_examples(self) -> list[Example]:
        """Every training example available (a suite picks how many it uses)."""

    @abstractmethod
    def eval_documents(self) -> list[dict[str, Any]]:
        """The test documents the lm-eval template reads, in a fixed order."""

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_examples()), "test": len(self.eval_documents())}

    def write_lm_eval_task(self, folder: Path, *, max_gen_toks: int) -> str:
        """Write this task's YAML and data into `folder`; return the lm-eval task name."""
        folder.mkdir(parents=True, exist_ok=True)
        data = folder / f"{self.name}.jsonl"
        with data.open("w") as f:
            for doc in self.eval_documents():
                f.write(json.dumps(doc) + "\n")
        config = yaml.safe_load((_HERE / self.lm_eval_yaml).read_text())
        task_name = "hizfo_" + self.name.replace("-", "_")
        config["task"] = task_name
        config.setdefault("dataset_kwargs", {})["data_files"] = {"test": str(data)}
        config.setdefault("generation_kwargs", {})["max_gen_toks"] = max_gen_toks
        (folder / f"{task_name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        return task_name
