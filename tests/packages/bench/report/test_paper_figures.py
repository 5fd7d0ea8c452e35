"""Figures fit for a paper (issue 35): one colour per method in every run, claims.png
panels that do not overlap, index.html plots at the size they were drawn and headings
in order."""

from __future__ import annotations

import re
from types import SimpleNamespace

import matplotlib.pyplot as plt
import pytest
from helpers.records import make_record, write_run

from bench.report.claims import claims_plot
from bench.report.index import render_index
from bench.report.plots import METHOD_COLORS, laid_out, method_colors, method_styles


def test_a_method_has_the_same_colour_in_every_run():
    one = method_colors(["fo-adamw", "mezo"])
    other = method_colors(["none", "lora", "mezo", "fo-adamw", "hizfo", "my-plugin"])
    assert one["fo-adamw"] == other["fo-adamw"] and one["mezo"] == other["mezo"]
    assert method_styles(["my-plugin"])["my-plugin"]["color"] == other["my-plugin"]
    # a variant: a shade of its method's colour, not its method's colour
    variants = method_colors(["hizfo", "hizfo[zo-off]", "hizfo[reverse]"])
    assert len(set(variants.values())) == 3
    builtin = method_colors(list(METHOD_COLORS))
    assert len(set(builtin.values())) == len(METHOD_COLORS)  # no two built-ins alike


def _claims() -> list:
    def comparison(method: str, mean: float) -> SimpleNamespace:
        interval = SimpleNamespace(mean=mean, lo=mean - 0.05, hi=mean + 0.05)
        return SimpleNamespace(
            method=method,
            reference="fo-adamw",
            unit="seeds x documents",
            interval=interval,
            direction=1 if mean >= 0 else -1,
        )

    tasks = [
        SimpleNamespace(
            task=task, comparisons=[comparison("hizfo", 0.03), comparison("hizfo[zo-off]", -0.02)]
        )
        for task in ("docstring-summary", "math-mini")
    ]
    return [
        SimpleNamespace(key=f"claim {i}", verdict="inconclusive", tasks=tasks, sweep=None)
        for i in (1, 2)
    ]


def test_claims_plot_panels_do_not_overlap(tmp_path, monkeypatch):
    figures = []
    save = plt.Figure.savefig
    monkeypatch.setattr(
        plt.Figure, "savefig", lambda self, *a, **k: (figures.append(self), save(self, *a, **k))
    )
    with laid_out():  # as write_report draws it
        written = claims_plot(_claims(), tmp_path)
    assert {p.name for p in written} == {"claims.png", "claims.pdf"}
    fig = figures[0]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()  # the closed figure, laid out again as it was saved
    renderer = fig.canvas.get_renderer()
    left, right = (ax.get_tightbbox(renderer) for ax in fig.axes[:2])
    assert left.x1 <= right.x0  # the right panel's labels clear the left panel


def test_index_shows_plots_at_their_size_and_keeps_headings_in_order(tmp_path):
    run = write_run(tmp_path / "run", [make_record("fo-adamw")])
    out = run / "report"
    (out / "plots").mkdir(parents=True)
    (out / "claims.md").write_text("# Claims\n\n## Claim 1\n\ntext\n")
    fig, _ = plt.subplots(figsize=(12, 4))
    fig.savefig(out / "plots" / "wide.png", dpi=150)
    plt.close(fig)
    page = render_index(run, out)
    assert page.count("<h1>") == 1  # the page's title only
    levels = [int(n) for n in re.findall(r"<h([1-6])[ >]", page)]
    assert levels[0] == 1 and all(b - a <= 1 for a, b in zip(levels, levels[1:], strict=False))
    image = re.search(r'<div class="scroll"><a [^>]*><img [^>]*wide.png[^>]*></a></div>', page)
    if image is None:  # no PDF beside it: the image is not a link
        image = re.search(r'<div class="scroll"><img [^>]*wide.png[^>]*></div>', page)
    assert image is not None
    assert 'width="1152"' in image.group(0)  # 12 in at 96 px per inch, not shrunk
    assert "width: 46em" not in page and "overflow-x: auto" in page


@pytest.mark.parametrize("text", ["# A\n\n## B\n", "### A\n\n#### B\n"])
def test_embedded_markdown_headings_go_below_the_page_in_order(text):
    from bench.report.index import render_markdown

    html = render_markdown(text, top=4)
    if html.startswith("<pre>"):
        pytest.skip("markdown-it-py not installed")
    assert "<h4>A</h4>" in html and "<h5>B</h5>" in html
    assert "<h1>A" in render_markdown("# A\n")  # without top: as written
