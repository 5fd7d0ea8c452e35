"""Throw-away method plugins for tests that need a real distribution on the Ray workers'
PYTHONPATH (workers are other processes): a module plus a dist-info with an entry point
in the hizfo_bench.methods group."""

from __future__ import annotations

from pathlib import Path

# A method whose step never returns (a deadlock, a lost collective, a plugin bug); its
# setup writes the worker's pid to `pid_file`.
HANGING_METHOD = """
import os
import time
from dataclasses import dataclass


@dataclass
class HangingConfig:
    pid_file: str = ""


class Hanging:
    config_class = HangingConfig
    trains = True

    def __init__(self, config):
        self.config = config

    def setup(self, model, ctx):
        with open(self.config.pid_file, "w") as f:
            f.write(str(os.getpid()))
        return model

    def step(self, batch, step):
        while True:
            time.sleep(1)

    def trainable_parameters(self):
        return []

    def state_dict(self):
        return {}

    def summary(self):
        return {}
"""


def install_plugin(folder: Path, module: str, entry: str, cls: str, source: str) -> None:
    """Module `module` (source `source`) in `folder`, registered as method `entry` ->
    `module:cls` by a dist-info of its own (distribution name: `module` with dashes)."""
    folder.mkdir()
    (folder / f"{module}.py").write_text(source)
    info = folder / f"{module}-0.1.dist-info"
    info.mkdir()
    name = module.replace("_", "-")
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[hizfo_bench.methods]\n{entry} = {module}:{cls}\n")
