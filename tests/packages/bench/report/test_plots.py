"""Report plots: layout (no title or legend over the data), per-method styles, per-task
score axes named by the task's metric, and the stacked memory breakdown."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from helpers.records import make_record

from bench import store
from bench.record import TrialRecord
from bench.report import plots

GIB = 2**30


@pytest.fixture
def figures(monkeypatch):
    """Keep each figure a plot function saves, by file stem, instead of writing it."""
    kept: dict[str, plt.Figure] = {}

    def keep(fig, folder, stem):
        kept[stem] = fig
        return [Path(folder) / f"{stem}.png"]

    monkeypatch.setattr(plots, "_save", keep)
    yield kept
    for fig in kept.values():
        plt.close(fig)


def _box(fig, artist):
    return artist.get_window_extent(fig.canvas.get_renderer())


def _breakdown(weights, grads, state, other):
    return {
        "kind": "weights_plus_added",
        "breakdown": {
            "estimate": True,
            "weights_bytes": weights,
            "gradients_bytes": grads,
            "optimizer_state_bytes": state,
            "activations_and_other_bytes": other,
        },
    }


def test_importance_title_clears_the_panel_titles(figures):
    history = [
        {"step": 10 * j, "importance": {f"model.layers.{i}.w": i + 1.0 for i in range(3)}}
        for j in range(3)
    ]
    record = make_record("hizfo", method_summary={"profiles": history})
    plots.importance_heatmap(record, history, Path("x"))
    (fig,) = figures.values()
    fig.canvas.draw()
    title = _box(fig, fig._suptitle)
    for ax in fig.axes[:2]:
        panel = _box(fig, ax.title)
        assert panel.y1 <= title.y0, "the figure title overlaps a panel title"


def test_importance_plots_of_two_methods_get_two_files(figures):
    history = [{"step": 0, "importance": {"model.layers.0.w": 1.0}, "fo": []}]
    for method in ("hizfo", "hizfo[zo-off]"):
        plots.importance_heatmap(make_record(method), history, Path("x"))
    assert set(figures) == {
        "hizfo_importance_math-mini_tiny_s0",
        "hizfo_zo-off_importance_math-mini_tiny_s0",
    }


def test_dev_legend_is_outside_the_axes_and_names_the_target(figures):
    points = [{"step": s, "seconds": s, "dev_loss": 3.0 - 0.1 * s} for s in range(0, 6, 2)]
    target = {"metric": "dev_loss", "value": 2.5, "target": "dev_loss <= 2.5"}
    records = [
        make_record(m, eval_curve=points, time_to_target=target)
        for m in ("fo-adamw", "mezo", "hizfo")
    ]
    plots.dev_curves(records, plots.method_styles(["fo-adamw", "mezo", "hizfo"]), Path("x"))
    fig = figures["dev_math-mini"]
    fig.canvas.draw()
    (legend,) = fig.legends
    assert not _box(fig, legend).overlaps(_box(fig, fig.axes[0]))
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["fo-adamw", "mezo", "hizfo", "target: dev_loss <= 2.5"]


def test_coinciding_curves_differ_in_line_style_and_marker(figures):
    methods = ["mezo", "addax", "zo-adam", "zo-sgd-momentum", "hizfo", "hizfo[zo-off]"]
    records = [make_record(m) for m in methods]  # identical curves, as in the smoke run
    plots.loss_curves(records, plots.method_styles(methods), Path("x"))
    ax = figures["loss_math-mini"].axes[0]
    looks = {(ln.get_linestyle(), ln.get_marker(), ln.get_markersize()) for ln in ax.lines}
    assert len(looks) == len(methods)


def test_method_styles_are_distinct_for_every_bundled_method():
    methods = ["none", "fo-adamw", "mezo", "lora", "hizfo", "hizfo[zo-off]", "addax"]
    methods += ["zo-adam", "zo-sgd-momentum", "zo-signsgd"]
    styles = plots.method_styles(methods)
    triples = {(s["linestyle"], s["marker"], s["markersize"]) for s in styles.values()}
    assert len(triples) == len(methods)
    assert styles == plots.method_styles(list(reversed(methods)))  # fixed per method


@pytest.mark.parametrize(
    ("metric", "words", "not_words"),
    [
        ("exact_match,strict-match", "% of test documents", "x100"),
        ("rougeL,none", "ROUGE-L", "% of test documents"),
        ("f1,none", "F1", "% of test documents"),
        ("pass@1,create_test", "pass@1 (% of test problems)", "create_test"),
        (None, "score", "%"),
    ],
)
def test_metric_label(metric, words, not_words):
    label = plots.metric_label(metric)
    assert words in label and not_words not in label


def test_task_metric_from_the_task_class_or_the_records():
    assert plots.task_metric("docstring-summary") == "rougeL,none"
    record = make_record("fo-adamw", task="my-jsonl", score=0.3, metrics={"rougeL,none": 0.3})
    assert plots.task_metric("my-jsonl", [record]) == "rougeL,none"
    assert plots.task_metric("my-jsonl", []) is None
    # a suite-defined jsonl task: the metric its spec names, no data read, no score needed
    spec = {"type": "jsonl", "metric": "f1", "train": "/nowhere/train.jsonl"}
    jsonl = make_record("mezo", task="qa", score=None, config={"task_config": spec})
    assert plots.task_metric("qa", [jsonl]) == "f1,none"
    assert "F1" in plots.metric_label(plots.task_metric("qa", [jsonl]))


def test_score_vs_time_one_panel_per_task_named_by_its_metric(figures):
    records = [
        make_record(m, task=t, score=0.4)
        for t in ("math-mini", "docstring-summary")
        for m in ("fo-adamw", "mezo")
    ]
    records.append(make_record("mezo", task="math-mini", seed=1, status="failed"))
    frame = store.records_frame(records)
    plots.score_vs_time(frame, plots.method_styles(["fo-adamw", "mezo"]), Path("x"), records)
    visible = [ax for ax in figures["score_vs_time"].axes if ax.get_visible()]
    labels = {ax.get_title(): ax.get_ylabel() for ax in visible}
    assert set(labels) == {"math-mini", "docstring-summary"}
    assert "ROUGE-L" in labels["docstring-summary"]
    assert "exact match" in labels["math-mini"]
    assert "% of test documents" not in labels["docstring-summary"]
    # the failed trial sits in its own task's panel only
    math = next(ax for ax in visible if ax.get_title() == "math-mini")
    doc = next(ax for ax in visible if ax.get_title() == "docstring-summary")
    assert len(math.collections) == 3 and len(doc.collections) == 2


def test_memory_breakdown_stacks_the_recorded_parts(figures):
    records = [
        make_record("fo-adamw", seed=s, memory=_breakdown(GIB, GIB, 2 * GIB, GIB // 2 + s))
        for s in (0, 1)
    ]
    records.append(make_record("mezo", memory=_breakdown(GIB, 0, 0, GIB)))
    records.append(make_record("lora", memory={"kind": "weights_plus_added"}))  # none: left out
    records.append(make_record("hizfo", status="failed", memory=_breakdown(1, 1, 1, 1)))
    written = plots.memory_breakdown(records, Path("x"))
    assert [p.name for p in written] == ["memory_math-mini.png"]
    ax = figures["memory_math-mini"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["fo-adamw", "mezo"]
    bars = [(round(b.get_y(), 4), round(b.get_height(), 4)) for b in ax.patches]
    # parts bottom to top (weights, gradients, state, rest), in GiB; fo-adamw's rest is
    # the mean over its two seeds
    rest = (GIB // 2 + 0.5) / GIB
    assert bars == [
        (0.0, 1.0),  # weights: fo-adamw, mezo
        (0.0, 1.0),
        (1.0, 1.0),  # gradients
        (1.0, 0.0),
        (2.0, 2.0),  # optimizer state
        (1.0, 0.0),
        (4.0, round(rest, 4)),  # activations and other
        (1.0, 1.0),
    ]
    legend = [t.get_text() for t in figures["memory_math-mini"].legends[0].get_texts()]
    assert legend == ["activations and other", "optimizer state", "gradients", "weights"]


def test_memory_breakdown_from_a_trial_run_through_the_recipe(tmp_path):
    """The recipe's record carries the parts the plot reads, and their sum is the peak
    the tables report (when the residual is not clipped at 0)."""
    from helpers.specs import make_spec

    from bench.train.recipe import run_trial

    spec = make_spec(
        "fo-adamw",
        {"lr": 1e-3},
        steps=2,
        batch_size=2,
        max_length=64,
        train_examples=8,
        log_every=1,
        limit=1,
        eval_batch_size=1,
        max_gen_toks=2,
    )
    record = run_trial(spec)
    assert record["status"] == "ok", record["error"]
    frame = plots.breakdown_frame([TrialRecord.from_dict(record)])
    assert len(frame) == 1
    parts = frame.iloc[0][[key for key, _, _ in plots.BREAKDOWN_PARTS]]
    # AdamW: two moments per weight, plus a step counter per tensor
    assert parts["optimizer_state_bytes"] == pytest.approx(2 * parts["gradients_bytes"], rel=1e-3)
    assert parts["gradients_bytes"] > 0
    if parts["activations_and_other_bytes"] > 0:
        assert parts.sum() == pytest.approx(record["peak_memory_bytes"], rel=0.05)
