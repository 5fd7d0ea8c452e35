"""The README's published numbers, regenerated from the run directories committed under
results/published/.

A block of the README (or any Markdown file) that quotes a run is marked::

    <!-- published: mini report/table.md#table -->
    ...generated text...
    <!-- /published -->

``mini`` names results/published/mini/, ``report/table.md`` the report file that
`hizfo-bench report` writes there, and ``#part`` an optional part of it: ``table`` the
first Markdown table, ``summary`` claims.md's verdict table, ``dose-response`` claims.md's
dose-response table. `regenerate` writes each named run's report anew (into a scratch
folder: the committed report/ is not trusted) and `blocks` compares or rewrites every
block, so a README number that no committed trial file supports fails the check.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MARK = re.compile(
    r"<!-- published: (?P<run>[\w.-]+) (?P<file>[\w./-]+?)(?:#(?P<part>[\w-]+))? -->\n"
    r"(?P<body>.*?)<!-- /published -->",
    re.S,
)
ROOT = Path("results/published")
# What a published run keeps of a run directory: the evidence, not the by-products
# (logs/, metrics/, progress/, checkpoints and tb/ stay behind).
KEPT = ("trials", "samples", "targets.json", "tuning.json", "suite.yaml", "run.log")


@dataclass(frozen=True)
class Block:
    run: str
    file: str
    part: str | None
    body: str
    start: int
    end: int

    @property
    def name(self) -> str:
        return f"{self.run} {self.file}" + (f"#{self.part}" if self.part else "")


def find_blocks(text: str) -> list[Block]:
    """Every published block of a Markdown text, in order."""
    return [
        Block(m["run"], m["file"], m["part"], m["body"], m.start("body"), m.end("body"))
        for m in MARK.finditer(text)
    ]


def _table_after(lines: list[str], start: int) -> str:
    out = []
    for line in lines[start:]:
        if line.startswith("|"):
            out.append(line)
        elif out:
            break
    return "\n".join(out) + "\n" if out else ""


def extract(text: str, part: str | None) -> str:
    """The named part of a report file's text (the whole text without one)."""
    if part is None:
        return text if text.endswith("\n") else text + "\n"
    lines = text.splitlines()
    if part == "table":
        return _table_after(lines, 0)
    heads = {
        "summary": lambda s: s.startswith("| claim | verdict |"),
        "dose-response": lambda s: s.startswith("### Dose-response"),
    }
    if part not in heads:
        raise ValueError(f"unknown part #{part} (known: table, {', '.join(heads)})")
    for i, line in enumerate(lines):
        if heads[part](line):
            return _table_after(lines, i)
    raise ValueError(f"the report has no {part} part")


def regenerate(runs: Iterable[str], root: Path = ROOT) -> dict[str, Path]:
    """Each named run's report, written anew from its committed trial files into a
    scratch folder (the caller removes it): run name -> report folder."""
    from bench.report import write_report

    out: dict[str, Path] = {}
    scratch = Path(tempfile.mkdtemp(prefix="hizfo-published-"))
    for run in sorted(set(runs)):
        run_dir = Path(root) / run
        if not (run_dir / "trials").is_dir():
            raise FileNotFoundError(f"{run_dir} is not a published run directory (no trials/)")
        write_report(run_dir, scratch / run / "report", plots=False)  # blocks quote text
        out[run] = scratch / run
    return out


def render_blocks(text: str, root: Path = ROOT) -> tuple[str, list[str]]:
    """The text with every published block regenerated, and the names of the blocks that
    changed (empty: the text matches the committed runs)."""
    import shutil

    blocks = find_blocks(text)
    if not blocks:
        return text, []
    folders = regenerate((b.run for b in blocks), root)
    try:
        changed, pieces, last = [], [], 0
        for b in blocks:
            new = extract((folders[b.run] / b.file).read_text(), b.part)
            if new != b.body:
                changed.append(b.name)
            pieces += [text[last : b.start], new]
            last = b.end
        pieces.append(text[last:])
        return "".join(pieces), changed
    finally:
        shutil.rmtree(next(iter(folders.values())).parent, ignore_errors=True)


def publish(run_dir: Path, name: str, root: Path = ROOT) -> Path:
    """Copy a run's evidence (KEPT) into root/name and write its report there; returns the
    published folder. Refuses to overwrite an existing one."""
    import shutil

    from bench.report import write_report

    run_dir, dest = Path(run_dir), Path(root) / name
    if not re.fullmatch(r"[\w.-]+", name):
        raise ValueError(f"name {name!r} must be a plain folder name")
    if not (run_dir / "trials").is_dir():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no trials/)")
    if dest.exists():
        raise FileExistsError(f"{dest} exists: remove it first to publish anew")
    dest.mkdir(parents=True)
    for item in KEPT:
        src = run_dir / item
        if src.is_dir():
            shutil.copytree(src, dest / item)
        elif src.is_file():
            shutil.copy2(src, dest / item)
    write_report(dest)
    # No machine's absolute paths in what gets committed: the run's folder is named by its
    # path under the repository (or "<run dir>" in the console log).
    for text_file, old in (
        (dest / "run.log", str(run_dir.resolve())),
        (dest / "run.log", str(run_dir)),
        (dest / "report" / "index.html", str(dest.resolve())),
    ):
        if text_file.is_file():
            new = "<run dir>" if text_file.name == "run.log" else str(dest)
            text_file.write_text(text_file.read_text().replace(old, new))
    return dest
