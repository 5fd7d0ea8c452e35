"""Report plots (matplotlib, Agg): loss curves, score against time, memory, Hi-ZFO's
importance and FO selection over a run, and metrics over several runs.

Every plot is written as PNG (to look at) and PDF (for a paper). Colours are fixed per
method across all plots of a report so a reader can match them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from bench.format import file_slug, fmt_memory, method_order  # noqa: E402
from bench.record import TrialRecord

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

_STYLE: dict[RcKeyType, Any] = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "font.size": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
}
_MARKERS = "osD^vP*X<>"
# Line styles cycle with a period (4) prime to the markers' (10) and the colours' (10
# minus one), so two methods share no (colour, line, marker) triple below 20 methods.
_LINESTYLES = ("-", "--", "-.", ":")
_MARKER_SIZES = (10.0, 7.0, 4.5)
_FAILED_COLOR = "#d62728"


# One colour per method in every plot of every run, so figures of two runs sit side by
# side: the built-in methods and shipped plugins have their own (tab10, red left to
# failed trials), a variant takes a shade of its method's, any other method a hue from
# a hash of its name.
METHOD_COLORS = {
    "fo-adamw": "#1f77b4",
    "mezo": "#ff7f0e",
    "lora": "#2ca02c",
    "hizfo": "#9467bd",
    "none": "#7f7f7f",
    "addax": "#8c564b",
    "zo-sgd-momentum": "#e377c2",
    "zo-adam": "#bcbd22",
    "mezo-gv": "#17becf",
    "mezo-greedy": "#393b79",
}
# A variant's shade of its method's colour: towards white (> 0) or black (< 0).
_VARIANT_SHADES = (0.45, -0.35, 0.65, -0.55, 0.25)


def _name_hash(name: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:4], "big")


def method_color(method: str) -> tuple[float, float, float]:
    """The method's colour (RGB, 0..1): the same in every plot and every run."""
    from matplotlib.colors import hsv_to_rgb, to_rgb

    if method in METHOD_COLORS:
        return to_rgb(METHOD_COLORS[method])
    base = method.split("[", 1)[0]
    if base != method and base in METHOD_COLORS:
        shade = _VARIANT_SHADES[_name_hash(method) % len(_VARIANT_SHADES)]
        rgb = np.array(to_rgb(METHOD_COLORS[base]))
        mixed = rgb + (1 - rgb) * shade if shade > 0 else rgb * (1 + shade)
        return tuple(float(x) for x in mixed)  # type: ignore[return-value]
    # Any other method: a hue from its name, away from the failed trials' red.
    hue = (20 + _name_hash(method) % 320) / 360
    r, g, b = hsv_to_rgb((hue, 0.7, 0.75))
    return float(r), float(g), float(b)


def method_colors(methods: list[str]) -> dict[str, Any]:
    """Each method's colour (``method_color``): fixed per method, whatever else a run has."""
    return {m: method_color(m) for m in method_order(set(methods))}


def laid_out() -> Any:
    """A context in which new figures use constrained layout: axes, tick labels and
    titles of neighbouring panels never overlap (for plots drawn outside this module,
    such as claims.png)."""
    return plt.rc_context({"figure.constrained_layout.use": True})


def method_styles(methods: list[str]) -> dict[str, dict[str, Any]]:
    """Colour, line style and marker per method, fixed across a report's plots.

    Curves of a short run often coincide (several ZO methods barely move the loss in a
    few steps); distinct dashes and hollow markers of different shapes and sizes keep
    each one visible where a colour alone would be painted over.
    """
    colors = method_colors(methods)
    return {
        m: {
            "color": colors[m],
            "linestyle": _LINESTYLES[i % len(_LINESTYLES)],
            "marker": _MARKERS[i % len(_MARKERS)],
            # Neighbours in the order get different sizes, so coinciding hollow markers
            # nest inside each other instead of covering each other.
            "markersize": _MARKER_SIZES[i % len(_MARKER_SIZES)],
        }
        for i, m in enumerate(method_order(set(methods)))
    }


def _line_kw(style: dict[str, Any], points: int) -> dict[str, Any]:
    """Keyword arguments of ``Axes.plot`` for one method's curve of `points` points."""
    return {
        "color": style["color"],
        "linestyle": style["linestyle"],
        "marker": style["marker"],
        "markersize": style["markersize"] if points <= 40 else style["markersize"] - 2,
        "markevery": max(1, points // 12),
        "markerfacecolor": "none",
        "markeredgewidth": 1.2,
        "linewidth": 1.5,
    }


def _legend_right(fig: plt.Figure, handles: list, labels: list[str]) -> None:
    """One legend for the whole figure, outside the axes on the right, so it covers no
    curve, target line or point."""
    if handles:
        fig.legend(handles, labels, loc="outside right center", fontsize=9)


# lm-eval metric names -> axis words; "%" for a share of documents, "x100" for a mean
# of per-document grades.
_METRIC_WORDS = {
    "exact_match": ("exact match", "% of test documents"),
    "acc": ("accuracy", "% of test documents"),
    "pass@1": ("pass@1", "% of test problems"),
    "pass_at_1": ("pass@1", "% of test problems"),
    "rougeL": ("ROUGE-L F-measure", "x100, mean over test documents"),
    "rouge_l": ("ROUGE-L F-measure", "x100, mean over test documents"),
    "f1": ("token F1", "x100, mean over test documents"),
}


def task_metric(task: str, records: list[TrialRecord] | None = None) -> str | None:
    """The lm-eval key of `task`'s score: from the task registry (a suite-defined task,
    such as a jsonl one, from its records' ``config.task_config``), else the metric of
    its records whose value equals the score."""
    from bench.tasks import task_labels

    mine = [r for r in records or [] if r.task == task]
    configs = {
        json.dumps(c, sort_keys=True, default=str): c
        for c in (r.config.get("task_config") for r in mine)
        if c
    }
    for config in [*configs.values(), None]:
        labels = task_labels(task, config)
        if labels is not None:
            return labels[1]
    for r in mine:
        if r.score is None:
            continue
        for key, value in r.metrics.items():
            if "stderr" not in key and value == r.score:
                return key
    return None


def metric_label(metric: str | None) -> str:
    """Axis label of a score x100 for an lm-eval metric key ("exact_match,strict-match")."""
    if not metric:
        return "score (x100)"
    base, _, filt = metric.partition(",")
    words, unit = _METRIC_WORDS.get(base, (base.replace("_", " "), "x100"))
    if filt and filt not in ("none", "create_test"):
        words += f", {filt}"
    return f"{words} ({unit})"


def _save(fig: plt.Figure, folder: Path, stem: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}.png", folder / f"{stem}.pdf"]
    for p in paths:
        fig.savefig(p, bbox_inches="tight")
    plt.close(fig)
    return paths


def time_unit(longest_seconds: float) -> tuple[str, float]:
    """Axis unit for durations up to `longest_seconds`: "1900 s" reads worse than "32 min"."""
    if longest_seconds >= 3 * 3600:
        return "h", 3600.0
    if longest_seconds >= 600:
        return "min", 60.0
    return "s", 1.0


def _model_suffix(model: str, models: set[str]) -> str:
    return f"_{file_slug(Path(model).name or model)}" if len(models) > 1 else ""


# ---- one run -------------------------------------------------------------------------


def run_plots(records: list[TrialRecord], frame: pd.DataFrame, folder: Path) -> list[Path]:
    """Every plot of one run's report; returns the files written."""
    styles = method_styles(list(frame["method"]))
    colors = {m: s["color"] for m, s in styles.items()}
    written = []
    with plt.rc_context(_STYLE):
        written += loss_curves(records, styles, folder)
        written += dev_curves(records, styles, folder)
        written += score_vs_time(frame, styles, folder, records)
        written += peak_memory(frame, colors, folder)
        written += memory_breakdown(records, folder)
        for r in records:
            history = profile_history(r)
            if history:
                written += importance_heatmap(r, history, folder)
    return written


def loss_curves(
    records: list[TrialRecord], styles: dict[str, dict[str, Any]], folder: Path
) -> list[Path]:
    """Per (model, task): training loss against step and against wall-clock seconds."""
    written = []
    models = {r.model for r in records}
    for model, task in sorted({(r.model, r.task) for r in records}):
        group = [r for r in records if (r.model, r.task) == (model, task)]
        fig, (ax_step, ax_time) = plt.subplots(
            1, 2, figsize=(12, 4.2), sharey=True, layout="constrained"
        )
        legend: dict[str, Any] = {}
        no_curve = set()
        unit, per = time_unit(max((p["seconds"] for r in group for p in r.curve), default=0.0))
        order = method_order({r.method for r in group})
        for r in sorted(group, key=lambda r: (order.index(r.method), r.seed)):
            curve = r.curve
            if not curve:
                no_curve.add(r.method)
                continue
            failed = not r.ok
            label = r.method + (" (failed)" if failed else "")
            kw = _line_kw(styles[r.method], len(curve))
            if failed:
                kw["alpha"] = 0.5
            steps = [p["step"] for p in curve]
            losses = [p["loss"] for p in curve]
            (line,) = ax_step.plot(steps, losses, **kw)
            ax_time.plot([p["seconds"] / per for p in curve], losses, **kw)
            if failed:  # where it stopped
                for ax, x in ((ax_step, steps[-1]), (ax_time, curve[-1]["seconds"] / per)):
                    ax.plot(x, losses[-1], "x", color=_FAILED_COLOR, markersize=9, zorder=4)
            legend.setdefault(label, line)
        ax_step.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_step.set_xlabel("optimisation step")
        ax_step.set_ylabel("training loss (nats / token)")
        ax_time.set_xlabel(f"training wall-clock ({unit})")
        ax_step.set_title("loss vs step")
        ax_time.set_title("loss vs wall-clock")
        no_curve -= {r.method for r in group if r.curve}
        _legend_right(fig, list(legend.values()), list(legend))
        fig.suptitle(f"{task} — {Path(model).name or model}", fontsize=11)
        if no_curve:
            fig.supxlabel(
                f"no training curve: {', '.join(sorted(no_curve))}", fontsize=9, color="0.35"
            )
        written += _save(fig, folder, f"loss_{file_slug(task)}{_model_suffix(model, models)}")
    return written


def dev_curves(
    records: list[TrialRecord], styles: dict[str, dict[str, Any]], folder: Path
) -> list[Path]:
    """Per (model, task) with evaluation points: dev loss (and dev score, when measured)
    against train-clock time, one line per trial, with the dev target drawn."""
    written = []
    with_points = [r for r in records if r.eval_curve and r.ok]
    models = {r.model for r in with_points}
    for model, task in sorted({(r.model, r.task) for r in with_points}):
        group = [r for r in with_points if (r.model, r.task) == (model, task)]
        metrics = ["dev_loss"]
        if any(p.get("dev_score") is not None for r in group for p in r.eval_curve):
            metrics.append("dev_score")
        fig, axes = plt.subplots(
            1,
            len(metrics),
            figsize=(5.5 * len(metrics) + 2, 4.2),
            squeeze=False,
            layout="constrained",
        )
        unit, per = time_unit(max(p["seconds"] for r in group for p in r.eval_curve))
        order = method_order({r.method for r in group})
        legend: dict[str, Any] = {}
        for ax, metric in zip(axes[0], metrics, strict=True):
            for r in sorted(group, key=lambda r: (order.index(r.method), r.seed)):
                pts = [p for p in r.eval_curve if p.get(metric) is not None]
                (line,) = ax.plot(
                    [p["seconds"] / per for p in pts],
                    [p[metric] for p in pts],
                    alpha=0.9,
                    **_line_kw(styles[r.method], len(pts)),
                )
                legend.setdefault(r.method, line)
            ttt = next((r.time_to_target for r in group if r.time_to_target), None)
            if ttt and ttt.get("metric") == metric and ttt.get("value") is not None:
                target = ax.axhline(ttt["value"], color="0.3", linestyle=":", linewidth=1.2)
                legend.setdefault(f"target: {ttt['target']}", target)
            ax.set_xlabel(f"train clock ({unit}, evaluation excluded)")
            ax.set_ylabel(metric.replace("_", " "))
        _legend_right(fig, list(legend.values()), list(legend))
        fig.suptitle(f"{task}: dev curves — {Path(model).name or model}", fontsize=11)
        written += _save(fig, folder, f"dev_{file_slug(task)}{_model_suffix(model, models)}")
    return written


def score_vs_time(
    frame: pd.DataFrame,
    styles: dict[str, dict[str, Any]],
    folder: Path,
    records: list[TrialRecord] | None = None,
) -> list[Path]:
    """One panel per task (tasks score on different metrics), one point per trial: score
    against train time, the y axis named by the task's metric; failed trials as red x on
    the axis. Colour and marker = method."""
    keys = sorted(set(zip(frame["task"], frame["model"], strict=True)))
    if not keys:  # a run with tuning trials only (no final trial scored on test)
        return []
    models = {m for _, m in keys}
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.6 * cols + 2, 3.8 * rows), squeeze=False, layout="constrained"
    )
    ok = frame[(frame["status"] == "ok") & frame["score"].notna()]
    longest = frame["train_seconds"].max(skipna=True)
    longest = 0.0 if pd.isna(longest) else float(longest)
    unit, per = time_unit(longest)
    right = max(1.0, longest / per)
    legend: dict[str, Any] = {}
    for ax, (task, model) in zip(axes.flat, keys, strict=False):
        here = ok[(ok["task"] == task) & (ok["model"] == model)]
        for method in method_order(set(frame["method"])):
            g = here[here["method"] == method]
            if g.empty:
                continue
            style = styles[method]
            handle = ax.scatter(
                g["train_seconds"].fillna(0) / per,
                100 * g["score"],
                s=55,
                color=style["color"],
                marker=style["marker"],
                edgecolor="black",
                linewidth=0.5,
                alpha=0.9,
                zorder=3,
            )
            legend.setdefault(method, handle)
        failed = frame[
            (frame["status"] != "ok") & (frame["task"] == task) & (frame["model"] == model)
        ]
        if len(failed):
            # Failed trials have no score; draw them on the x axis so they are not invisible.
            legend["failed"] = ax.scatter(
                failed["train_seconds"].fillna(0) / per,
                np.zeros(len(failed)),
                marker="x",
                s=60,
                color=_FAILED_COLOR,
                zorder=4,
                clip_on=False,
            )
        ax.set_xlabel(f"train time per trial ({unit})")
        ax.set_ylabel(metric_label(task_metric(task, records)))
        ax.set_title(task if len(models) == 1 else f"{task} — {Path(model).name or model}")
        # Fixed limits so a run of zero-shot or failed trials still gets readable axes.
        top = float(100 * here["score"].max()) if len(here) else 0.0
        ax.set_ylim(-3, max(10.0, top * 1.08 + 2))
        ax.set_xlim(-0.02 * right, 1.05 * right)
    for ax in list(axes.flat)[len(keys) :]:
        ax.set_visible(False)
    _legend_right(fig, list(legend.values()), list(legend))
    fig.suptitle("test score vs train time (one point per trial)", fontsize=11)
    return _save(fig, folder, "score_vs_time")


def peak_memory(frame: pd.DataFrame, colors: dict, folder: Path) -> list[Path]:
    """Peak memory per method (bars: mean over seeds, whiskers: std), grouped by task."""
    ok = frame[(frame["status"] == "ok") & frame["peak_memory_bytes"].notna()]
    methods = method_order(set(frame["method"]))
    groups = sorted({(m, t) for m, t in zip(frame["model"], frame["task"], strict=True)})
    fig, ax = plt.subplots(figsize=(min(12, max(6, 0.7 * len(methods) * len(groups) + 2)), 4.5))
    # GiB on the axis once bars pass 2 GiB, so tick labels stay short.
    biggest = float(ok["peak_memory_bytes"].max()) if len(ok) else 0.0
    unit, scale = ("GiB", 2**30) if biggest > 2 * 2**30 else ("MiB", 2**20)
    width = 0.8 / max(1, len(methods))
    top = 0.0
    for gi, (model, task) in enumerate(groups):
        for mi, method in enumerate(methods):
            x = gi + (mi - (len(methods) - 1) / 2) * width
            g = ok[(ok["model"] == model) & (ok["task"] == task) & (ok["method"] == method)]
            if g.empty:
                tried = frame[
                    (frame["model"] == model)
                    & (frame["task"] == task)
                    & (frame["method"] == method)
                ]
                if len(tried):
                    ax.text(
                        x,
                        0,
                        f" {method}: failed",
                        rotation=90,
                        ha="center",
                        va="bottom",
                        color=_FAILED_COLOR,
                        fontsize=8,
                    )
                continue
            mib = g["peak_memory_bytes"] / scale
            std = float(mib.std()) if len(mib) > 1 else 0.0
            ax.bar(
                x,
                mib.mean(),
                width * 0.9,
                yerr=std if len(mib) > 1 else None,
                capsize=3,
                color=colors[method],
                edgecolor="black",
                linewidth=0.5,
                label=method if gi == 0 else None,
            )
            ax.annotate(
                fmt_memory(g["peak_memory_bytes"].mean()),
                (x, mib.mean() + std),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                fontsize=8,
            )
            top = max(top, float(mib.mean() + std))
    models = {m for m, _ in groups}
    ax.set_xlim(-0.5, len(groups) - 0.5)  # text alone does not widen the limits
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([t if len(models) == 1 else f"{t}\n{Path(m).name or m}" for m, t in groups])
    kinds = sorted(set(frame["memory_kind"].dropna()))
    what = {
        "weights_plus_added": "weights + peak added by training",
        "cuda_max_allocated": "peak GPU memory allocated",
        "cpu_rss_added": "peak CPU memory added by training",
    }
    ylabel = " / ".join(what.get(k, k) for k in kinds) or "peak memory"
    ax.set_ylabel(f"{ylabel} ({unit})")
    ax.set_ylim(0, top * 1.15 if top > 0 else 1)
    ax.set_title("peak memory per method")
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
    return _save(fig, folder, "peak_memory")


# The parts of memory.breakdown, bottom to top of a stacked bar (bench/measure/memory.py).
BREAKDOWN_PARTS = (
    ("weights_bytes", "weights", "#4c72b0"),
    ("gradients_bytes", "gradients", "#dd8452"),
    ("optimizer_state_bytes", "optimizer state", "#55a868"),
    ("activations_and_other_bytes", "activations and other", "#c8c8c8"),
)


def breakdown_frame(records: list[TrialRecord]) -> pd.DataFrame:
    """One row per successful trial with a memory breakdown: method, task, model, seed and
    each part's bytes (bench/measure/memory.py; trials without one are left out)."""
    rows = []
    for r in records:
        parts = (r.memory or {}).get("breakdown") or {}
        if not r.ok or not all(
            isinstance(parts.get(key), int | float) for key, _, _ in BREAKDOWN_PARTS
        ):
            continue
        row: dict[str, Any] = {"method": r.method, "task": r.task, "model": r.model, "seed": r.seed}
        row.update({key: float(parts[key]) for key, _, _ in BREAKDOWN_PARTS})
        rows.append(row)
    columns = ["method", "task", "model", "seed", *(key for key, _, _ in BREAKDOWN_PARTS)]
    return pd.DataFrame(rows, columns=columns)


def memory_breakdown(records: list[TrialRecord], folder: Path) -> list[Path]:
    """Per (model, task): one stacked bar per method, weights, gradients, optimizer state
    and activations (the residual of the measured peak), means over the seeds. The bar's
    height is the peak the tables report (weights plus what training added)."""
    frame = breakdown_frame(records)
    written = []
    models = set(frame["model"])
    for (model, task), g in sorted(frame.groupby(["model", "task"]), key=lambda kv: kv[0]):
        means = g.groupby("method")[[key for key, _, _ in BREAKDOWN_PARTS]].mean()
        methods = method_order(set(means.index))
        means = means.loc[methods]
        biggest = float(means.sum(axis=1).max())
        unit, scale = ("GiB", 2**30) if biggest > 2 * 2**30 else ("MiB", 2**20)
        fig, ax = plt.subplots(
            figsize=(max(5.5, 0.75 * len(methods) + 3), 4.5), layout="constrained"
        )
        x = np.arange(len(methods))
        bottom = np.zeros(len(methods))
        for key, label, color in BREAKDOWN_PARTS:
            values = means[key].to_numpy() / scale
            ax.bar(
                x,
                values,
                0.7,
                bottom=bottom,
                color=color,
                edgecolor="black",
                linewidth=0.5,
                label=label,
            )
            bottom += values
        for xi, total in zip(x, means.sum(axis=1), strict=True):
            ax.annotate(
                fmt_memory(total),
                (xi, total / scale),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                fontsize=8,
            )
        seeds = g.groupby("method")["seed"].nunique()
        ax.set_xticks(x)
        ax.set_xticklabels(
            methods,
            rotation=30 if len(methods) > 4 else 0,
            ha="right" if len(methods) > 4 else "center",
        )
        ax.set_ylabel(f"memory at the peak ({unit}; estimates from tensor sizes)")
        ax.set_ylim(0, max(bottom.max(), 1e-9) * 1.12)
        n = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}-{seeds.max()}"
        ax.set_title(
            f"memory breakdown — {task}, {Path(model).name or model} "
            f"(mean over {n} seed{'s' if seeds.max() > 1 else ''})",
            fontsize=11,
        )
        handles, labels = ax.get_legend_handles_labels()
        _legend_right(fig, handles[::-1], labels[::-1])  # top of the stack first
        written += _save(fig, folder, f"memory_{file_slug(task)}{_model_suffix(model, models)}")
    return written


# ---- Hi-ZFO's profiling history --------------------------------------------------------


def profile_history(record: TrialRecord) -> list[dict[str, Any]]:
    """The list of {"step", "importance": {tensor: score}, "fo": [tensor]} a method
    reported in method_summary, whatever key it used; [] when there is none."""
    summary = record.method_summary or {}
    if not isinstance(summary, dict):
        return []
    candidates = [summary.get(k) for k in ("profiles", "history", "profile_history")]
    candidates += list(summary.values())
    for value in candidates:
        if (
            isinstance(value, list)
            and value
            and all(isinstance(p, dict) and isinstance(p.get("importance"), dict) for p in value)
        ):
            return value
    return []


_LAYER = re.compile(r"(?:^|\.)(?:layers|h|layer|blocks|block)\.(\d+)\.")


def layer_of(tensor: str) -> str:
    """Group a parameter name by transformer block ("layer 12"); embeddings and the head
    keep their own rows, so the heatmap has one row per block plus a few."""
    m = _LAYER.search(tensor)
    if m:
        return f"layer {int(m.group(1)):d}"
    if "embed" in tensor or "wte" in tensor or "wpe" in tensor:
        return "embeddings"
    if "lm_head" in tensor:
        return "lm head"
    return "final norm / other"


def _layer_sort_key(name: str) -> tuple[int, int]:
    if name == "embeddings":
        return (0, 0)
    if name.startswith("layer "):
        return (1, int(name.split()[1]))
    return (2, 0 if name == "final norm / other" else 1)


def layer_matrices(
    history: list[dict[str, Any]],
) -> tuple[list[str], list[int], np.ndarray, np.ndarray]:
    """Per (layer, profile): importance summed over the layer's tensors, normalised so each
    profile's largest layer is 1 (raw scores change scale as training goes on), and the
    fraction of the layer's tensors that were FO."""
    tensors = sorted(
        {t for p in history for t in p["importance"]}
        | {t for p in history for t in p.get("fo", [])}
    )
    layers = sorted({layer_of(t) for t in tensors}, key=_layer_sort_key)
    index = {name: i for i, name in enumerate(layers)}
    steps = [int(p.get("step", i)) for i, p in enumerate(history)]
    importance = np.zeros((len(layers), len(history)))
    fo = np.zeros((len(layers), len(history)))
    count = np.zeros(len(layers))
    for t in tensors:
        count[index[layer_of(t)]] += 1
    for j, p in enumerate(history):
        for t, score in p["importance"].items():
            importance[index[layer_of(t)], j] += abs(float(score))
        for t in p.get("fo", []):
            fo[index[layer_of(t)], j] += 1
        peak = importance[:, j].max()
        if peak > 0:
            importance[:, j] /= peak
    fo /= np.maximum(count, 1)[:, None]
    return layers, steps, importance, fo


def importance_heatmap(
    record: TrialRecord, history: list[dict[str, Any]], folder: Path
) -> list[Path]:
    """Two heatmaps sharing the layer axis: importance per layer over the profiles, and
    which share of each layer's tensors was updated first-order."""
    layers, steps, importance, fo = layer_matrices(history)
    height = max(3.5, 0.22 * len(layers) + 1.5)
    # Constrained layout keeps the suptitle above the two-line panel titles.
    fig, (ax_imp, ax_fo) = plt.subplots(
        1, 2, figsize=(10, height + 0.6), sharey=True, layout="constrained"
    )
    extent_kw = {"aspect": "auto", "interpolation": "nearest", "origin": "lower"}
    im = ax_imp.imshow(importance, cmap="viridis", vmin=0, vmax=1, **extent_kw)
    fo_im = ax_fo.imshow(fo, cmap="Greys", vmin=0, vmax=1, **extent_kw)
    for ax in (ax_imp, ax_fo):
        ax.spines[["top", "right"]].set_visible(True)  # a heatmap needs its frame
        ticks = range(len(steps))
        every = max(1, len(steps) // 8)
        ax.set_xticks(list(ticks)[::every])
        ax.set_xticklabels([str(s) for s in steps][::every])
        ax.set_xlabel("training step of the profile")
        ax.grid(False)
    every = max(1, len(layers) // 24)
    ax_imp.set_yticks(range(0, len(layers), every))
    ax_imp.set_yticklabels(layers[::every], fontsize=8)
    ax_imp.set_ylabel("layer (input at the bottom)")
    ax_imp.set_title("importance (sum over the layer's tensors,\nnormalised per profile)")
    ax_fo.set_title("first-order share of the layer's tensors\n(white = all ZO, black = all FO)")
    fig.colorbar(im, ax=ax_imp, fraction=0.046, pad=0.02, label="relative importance")
    fig.colorbar(fo_im, ax=ax_fo, fraction=0.046, pad=0.02, label="FO tensors / tensors")
    fig.suptitle(
        f"{record.method} profiles — {record.task}, {Path(record.model).name or record.model}, "
        f"seed {record.seed}",
        fontsize=11,
    )
    # Named by method: hizfo and an ablation such as hizfo[zo-off] must not share a file.
    model = file_slug(Path(record.model).name or record.model)
    stem = f"{file_slug(record.method)}_importance_{file_slug(record.task)}_{model}_s{record.seed}"
    return _save(fig, folder, stem)


# ---- several runs -----------------------------------------------------------------------


_HISTORY_METRICS = (
    ("score", "score (%)", 100.0),
    ("train_seconds", "train time (s)", 1.0),
    ("peak_memory_bytes", "peak memory (MiB)", 1 / 2**20),
)


def history_plots(frame: pd.DataFrame, folder: Path) -> list[Path]:
    """Each metric over time (a trial's started_at), one line per (method, task, model);
    seeds of one run are averaged, failed trials marked with a red x on the axis."""
    colors = method_colors(list(frame["method"]))
    tasks = sorted(set(frame["task"]))
    models = sorted(set(frame["model"]))
    linestyles = ["-", "--", ":", "-."]
    written = []
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(len(_HISTORY_METRICS), 1, figsize=(9, 8), sharex=True)
        # A failed trial's numbers are blanked, not dropped: the line breaks at that run
        # instead of bridging it, and the red x below marks why.
        valid = frame.copy()
        valid.loc[valid["status"] != "ok", [m for m, _, _ in _HISTORY_METRICS]] = np.nan
        order = method_order(set(frame["method"]))
        keys = sorted(
            set(zip(valid["method"], valid["task"], valid["model"], strict=True)),
            key=lambda k: (order.index(k[0]), k[1], k[2]),
        )
        for method, task, model in keys:
            g = valid[
                (valid["method"] == method) & (valid["task"] == task) & (valid["model"] == model)
            ]
            per_run = g.groupby("run").agg(
                when=("started_at", "min"),
                **{m: (m, "mean") for m, _, _ in _HISTORY_METRICS},
            )
            per_run = per_run.sort_values("when")
            label = method
            if len(tasks) > 1:
                label += f" · {task}"
            if len(models) > 1:
                label += f" · {Path(model).name or model}"
            style = linestyles[
                (tasks.index(task) + len(tasks) * models.index(model)) % len(linestyles)
            ]
            for ax, (metric, _, scale) in zip(axes, _HISTORY_METRICS, strict=True):
                ax.plot(
                    per_run["when"],
                    per_run[metric] * scale,
                    marker="o",
                    markersize=4,
                    linestyle=style,
                    color=colors[method],
                    label=label,
                )
        failed = frame[frame["status"] != "ok"]
        for ax, (_, ylabel, _) in zip(axes, _HISTORY_METRICS, strict=True):
            if len(failed):
                ax.scatter(
                    failed["started_at"],
                    np.zeros(len(failed)),
                    marker="x",
                    color=_FAILED_COLOR,
                    label=f"failed trial ({len(failed)})",
                    zorder=4,
                    clip_on=False,  # sits on the x axis; clipping would halve it
                )
            ax.set_ylabel(ylabel)
            ax.set_ylim(bottom=0)
        axes[0].set_title(f"metrics over {frame['run'].nunique()} runs (mean over seeds)")
        axes[-1].set_xlabel("trial start (UTC)")
        axes[0].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
        fig.autofmt_xdate()
        written += _save(fig, folder, "history")
    return written
