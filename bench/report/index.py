"""report/index.html: one page that links everything a run left behind.

Written last, after the tables and plots, from what is on disk: the report's tables
(Markdown, LaTeX, CSV; table.md and claims.md shown inline, their headings below the
page's), every plot (the PNG shown at the size it was drawn, scrolling sideways when
wider than the page, linked to its PDF), then one row per trial linking its result file, log, per-document
samples and metrics stream, and the run's tuning.json and targets.json. Links are
relative, so the run folder can be moved or served as it is (``python -m http.server``),
and only files that exist are linked. A static page with no script and no outside
resource: it opens from the file system in any browser.

Markdown is rendered with markdown-it-py when it is installed, else shown as text.
"""

from __future__ import annotations

import html
import os
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from bench import store
from bench.record import TrialRecord

# Report files in the order the page lists them, with what each one is.
REPORT_FILES = (
    ("table.md", "main table (Markdown)"),
    ("table.tex", "main table (LaTeX, booktabs)"),
    ("table.csv", "main table (CSV, raw numbers)"),
    ("trials.csv", "one row per trial, flat columns"),
    ("time_to_target.md", "time to the dev target"),
    ("tuning.md", "tuning: points tried and the choice"),
    ("claims.md", "the paper's claims and their verdicts"),
    ("join.md", "joint table over several runs"),
)
# Shown inline on the page, in this order.
INLINE = ("table.md", "claims.md", "time_to_target.md")
# Per-trial files: (column, folder under the run, suffix).
TRIAL_FILES = (
    ("record", "trials", ".json"),
    ("log", "logs", ".log"),
    ("samples", "samples", ".jsonl"),
    ("metrics", "metrics", ".jsonl"),
)

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 75em; padding: 0 1em;
       color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td { background: #fdecea; }
figure { margin: 0 0 1.5em 0; }
figure .scroll { overflow-x: auto; max-width: 100%; }
figure img { max-width: none; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #555; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.88em; }
nav a { margin-right: 1em; }
"""


def _href(target: Path, out_dir: Path) -> str:
    return quote(os.path.relpath(target, out_dir).replace(os.sep, "/"))


def _link(target: Path, out_dir: Path, text: str) -> str:
    return f'<a href="{_href(target, out_dir)}">{html.escape(text)}</a>'


def render_markdown(text: str, *, top: int | None = None) -> str:
    """Markdown as HTML (tables included) with markdown-it-py, or escaped text in <pre>.
    With `top`, the document's highest heading becomes h`top` and the others keep their
    distance below it (at most h6), so an embedded document's headings sit below the
    page's own, in order."""
    try:
        from markdown_it import MarkdownIt
    except ImportError:
        return f"<pre>{html.escape(text)}</pre>"
    out = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    levels = [int(n) for n in re.findall(r"<h([1-6])>", out)]
    if top is not None and levels:
        shift = top - min(levels)
        out = re.sub(r"<(/?)h([1-6])>", lambda m: f"<{m[1]}h{min(6, int(m[2]) + shift)}>", out)
    return out


def shown_width(png: Path) -> int | None:
    """The CSS pixels a plot is shown at: its size in inches (the PNG's pixels over the
    dots per inch of its pHYs chunk, which matplotlib writes) at 96 px per inch, so its
    text reads at the size it was drawn; None when the file does not say."""
    try:
        data = png.read_bytes()
    except OSError:
        return None
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    width = struct.unpack(">I", data[16:20])[0]
    at = data.find(b"pHYs")
    if at < 0:
        return None
    per_metre, _, unit = struct.unpack(">IIB", data[at + 4 : at + 13])
    if unit != 1 or not per_metre:
        return None
    return round(width / (per_metre * 0.0254) * 96)


def _trial_rows(run_dir: Path, out_dir: Path, records: list[TrialRecord]) -> list[str]:
    rows = []
    for r in sorted(
        records,
        key=lambda r: (
            r.config.get("phase", "final") != "final",
            r.task,
            r.method,
            r.seed,
        ),
    ):
        trial_id = r.trial_id
        links = []
        for name, folder, suffix in TRIAL_FILES:
            path = run_dir / folder / f"{trial_id}{suffix}"
            links.append(_link(path, out_dir, name) if path.is_file() else "")
        score = r.score
        status = r.status or "?"
        if r.error:
            status += f": {r.error}"
        seed = r.seed
        cells = [
            html.escape(trial_id),
            html.escape(str(r.method)),
            html.escape(str(r.task)),
            html.escape(str(r.model)),
            ("num", html.escape(str(seed))),
            html.escape(r.config.get("phase", "final")),
            html.escape(status),
            ("num", f"{score:.4f}" if isinstance(score, int | float) else ""),
            *links,
        ]
        tds = "".join(
            f'<td class="{c[0]}">{c[1]}</td>' if isinstance(c, tuple) else f"<td>{c}</td>"
            for c in cells
        )
        css = "" if r.ok else ' class="failed"'
        rows.append(f"<tr{css}>{tds}</tr>")
    return rows


def skipped_lines(skipped: list[str]) -> list[str]:
    """The report header's count of trial files skipped for breaking the contract, then one
    line per file (`store.read_run`); [] when none was."""
    if not skipped:
        return []
    n = len(skipped)
    head = f"{n} trial file{'s' if n > 1 else ''} skipped (they break the result contract): "
    return [head + "; ".join(skipped), *skipped]


def environment_lines(records: Sequence[TrialRecord]) -> list[str]:
    """Report-header lines when the trials did not run the locked packages: a package
    installed at another version than requirements.lock pins (each trial's
    environment.lock, bench/measure/environment.lock_status), or trials made from
    different lock files; [] when every trial ran the locked versions or none recorded a
    lock (a run older than the lock, or an installed wheel)."""
    locks: set[str] = set()
    differs: dict[str, set[str]] = {}
    affected = 0
    for r in records:
        lock = (r.environment or {}).get("lock")
        if not lock:
            continue
        locks.add(str(lock.get("sha1")))
        if lock.get("differs"):
            affected += 1
        for name, v in (lock.get("differs") or {}).items():
            installed = v.get("installed") or "not installed"
            differs.setdefault(name, set()).add(f"locked {v.get('locked')}, ran {installed}")
    lines = []
    if differs:
        packages = "; ".join(f"{n} ({', '.join(sorted(v))})" for n, v in sorted(differs.items()))
        lines.append(
            f"{affected} of {len(records)} trials ran packages at other versions than "
            f"requirements.lock pins: {packages}"
        )
    if len(locks) > 1:
        lines.append(
            f"the trials were made from {len(locks)} different requirements.lock files "
            f"(SHA-1 {', '.join(sorted(x[:8] for x in locks))})"
        )
    return lines


def render_index(run_dir: Path, out_dir: Path) -> str:
    """The page for `run_dir` whose report is in `out_dir` (both must exist)."""
    run_dir, out_dir = Path(run_dir).resolve(), Path(out_dir).resolve()
    files = store.read_run(run_dir)
    records = files.records
    ok = sum(r.ok for r in records)
    title = f"hizfo-bench report: {run_dir.name}"
    skipped = skipped_lines(files.skipped)
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{len(records)} trials ({ok} ok, {len(records) - ok} failed) in "
        f"<code>{html.escape(str(run_dir))}</code>. TensorBoard events, when the run had "
        f"<code>--tracker tensorboard</code>: <code>tensorboard --logdir "
        f"{html.escape(str(run_dir / 'tb'))}</code>.</p>",
        *(
            [f'<p class="failed">{html.escape(skipped[0].split(": ", 1)[0])}:</p><ul>']
            + [f"<li>{html.escape(line)}</li>" for line in skipped[1:]]
            + ["</ul>"]
            if skipped
            else []
        ),
        '<nav><a href="#tables">tables</a><a href="#plots">plots</a>'
        '<a href="#trials">trials</a></nav>',
        '<h2 id="tables">Tables</h2>',
        "<ul>",
    ]
    for name, what in REPORT_FILES:
        if (out_dir / name).is_file():
            body.append(f"<li>{_link(out_dir / name, out_dir, name)}: {html.escape(what)}</li>")
    for name in ("tuning.json", "targets.json"):
        if (run_dir / name).is_file():
            body.append(f"<li>{_link(run_dir / name, out_dir, name)}: the run's {name}</li>")
    body.append("</ul>")
    for name in INLINE:
        if (out_dir / name).is_file():
            body.append(f"<h3>{html.escape(name)}</h3>")
            # Its own headings (claims.md's "# Claims") go below the page's h1 to h3.
            body.append(render_markdown((out_dir / name).read_text(), top=4))

    body.append('<h2 id="plots">Plots</h2>')
    pngs = sorted((out_dir / "plots").glob("*.png")) if (out_dir / "plots").is_dir() else []
    if not pngs:
        body.append("<p>No plots.</p>")
    for png in pngs:
        pdf = png.with_suffix(".pdf")
        # At the size it was drawn (a wide plot scrolls sideways rather than shrink
        # its text), linked to its PDF.
        width = shown_width(png)
        size = f' width="{width}"' if width else ""
        image = f'<img src="{_href(png, out_dir)}" alt="{html.escape(png.stem)}"{size}>'
        if pdf.is_file():
            image = f'<a href="{_href(pdf, out_dir)}">{image}</a>'
            caption = f"{html.escape(png.stem)} ({_link(pdf, out_dir, 'PDF')})"
        else:
            caption = html.escape(png.stem)
        body.append(
            f'<figure><div class="scroll">{image}</div><figcaption>{caption}</figcaption></figure>'
        )

    body.append('<h2 id="trials">Trials</h2>')
    head = ["trial", "method", "task", "model", "seed", "phase", "status", "score"]
    head += [name for name, _, _ in TRIAL_FILES]
    body.append("<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>")
    body.append("<tbody>" + "\n".join(_trial_rows(run_dir, out_dir, records)) + "</tbody></table>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def write_index(run_dir: Path, out_dir: Path) -> Path:
    """``out_dir/index.html`` for `run_dir`; returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "index.html"
    path.write_text(render_index(run_dir, out_dir))
    return path
