"""Tuning on dev (AlgoPerf's external tuning), then the final trials.

A suite gives methods a search space and the tuning budget::

    tuning: {trials: 8, seeds: [0], metric: dev_loss, strategy: staged, extend_edges: true}
    methods:
      mezo:
        config: {eps: 1.0e-3}
        search: {lr: {log_uniform: [1.0e-7, 1.0e-5]}}    # or a list of values to choose from
      hizfo:
        config: {fo_lr: 3.0e-5, zo_lr: 1.0e-6}
        search:                                         # searched in this order when staged
          fo_lr: {log_uniform: [5.0e-6, 1.0e-4]}
          zo_lr: {loguniform: [1.0e-7, 1.0e-4]}         # Ray Tune's and Optuna's spelling

**Budget.** ``trials`` is the number of points per searched dimension: a method with d
searched dimensions gets ``trials * d`` points (per task and model), so every dimension
gets the same budget whatever the method (AlgoPerf gives every submission the same
number of trials; with search spaces of different sizes, the same number per dimension
is the fair counterpart). Each point runs on the tuning seeds as a ``phase: tune`` trial:
trained with evaluation points on dev and never scored on test. The point with the best
mean final dev value is then run on the suite's seeds and scored on test.

**Strategy.** ``joint`` (default) draws the ``trials * d`` points from the whole space at
once. ``staged`` searches one dimension at a time, in the order the search space lists
them: ``trials`` points of the first with the others at their ``config`` values (or the
method's defaults), then ``trials`` points of the second with the first fixed at its
choice, and so on; the previous stage's winner is a candidate of every later stage. For
Hi-ZFO the two learning rates move the dev loss by very different amounts (one ZO step
changes it by about 1% of what one FO step does on SmolLM2, issue 22): in a joint search
the ranking is decided by fo_lr and zo_lr rides along with whichever fo_lr won, so its
value is not chosen at all. Staged, the zo_lr points differ in zo_lr only, on the same
seeds and data order, so their dev values are paired and the small effect is what
separates them. Same budget either way (``trials`` per dimension).

**Independent sequences.** Every (method, stage, round) draws its own scrambled Halton
sequence (scipy.stats.qmc), seeded by a hash of its name and ``tuning.seed``, so the
points are the same on every machine but differ between methods (a shared sequence gave
every method the same relative positions in its range).

**Edges.** A chosen value that is the lowest or highest of the values tried along its
dimension is flagged (tuning.md, tuning.json and a console line): the best value may lie
outside the range. With ``extend_edges: true`` (or a number of extensions, true = 2) the
range is extended past that edge by its own width (log width for log_uniform) and
``trials`` more points per extended dimension are searched there, then the choice is made
again over every point of the stage; a flag that survives the last extension stays in
the report.

**Variants.** A variant ``base[...]`` without a search of its own runs its final trials
with its base's chosen values, except for a tuned key it sets to its own value: Hi-ZFO's
ablations train at Hi-ZFO's tuned rates (they differ from it in one switch), while
``hizfo[zo-lr-10x]`` keeps its own zo_lr.

Why not Ray Tune: our sweep already runs trials on Ray with resume, resource plans and
one result file per trial; a Tuner would keep its own trial state and result folders
beside ours. A quasi-random sample with a dev pick is all AlgoPerf's external tuning
needs, and scipy.stats.qmc provides the sequence.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic

from bench.analysis.selection import Choice, choose, config_key, edge_sides
from bench.analysis.targets import METRICS
from bench.config import ConfigError, Strict, build, settings, with_settings
from bench.record import TrialRecord

# Spellings of a range: ours, Ray Tune's (tune.loguniform) and Optuna's (LogUniform).
_SPACE_KINDS = {"log_uniform": "log_uniform", "loguniform": "log_uniform", "uniform": "uniform"}
STRATEGIES = ("joint", "staged")
DEFAULT_EXTENSIONS = 2  # extend_edges: true


@dataclass
class TuningPlan:
    """What the suite asked for: budget, seeds, metric, strategy and each method's space.

    Attributes:
        trials: points per searched dimension (a method with d dimensions gets trials * d).
        seeds: the tuning seeds each point trains on.
        metric: dev_loss or dev_score, the final value a point is judged by.
        spaces: method -> {config key: {"log_uniform"|"uniform": [lo, hi]} or [values]},
            numeric bounds, in the order written.
        strategy: "joint" or "staged" (one dimension at a time, in order).
        extend_edges: how many times a range may be extended past an edge choice (0: never).
        seed: the base seed of every method's quasi-random sequence.
    """

    trials: int
    seeds: list[int]
    metric: str
    spaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    strategy: str = "joint"
    extend_edges: int = 0
    seed: int = 0

    def budget(self, method: str) -> int:
        """Points of one (method, task, model) before any edge extension."""
        return self.trials * len(self.spaces.get(method, {}))


def _number(value: Any, where: str) -> float:
    """A bound as a float: PyYAML reads ``1e-4`` (no dot) as a string, so numeric strings
    are numbers here; anything else is a one-line error."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{where}: expected a number, got {value!r}")


def _numeric_string(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_space(space: Any, config_class: type, where: str) -> dict[str, Any]:
    """Check a method's search space: known config keys, a list or a range each; ranges
    come back as ``{"log_uniform" | "uniform": [lo, hi]}`` with float bounds."""
    if not isinstance(space, Mapping) or not space:
        raise ConfigError(f"{where}: expected a mapping of config keys to ranges or lists")
    fields = {f.name for f in dataclasses.fields(config_class)}
    out: dict[str, Any] = {}
    for key, dim in space.items():
        if key not in fields:
            raise ConfigError(
                f"{where}: unknown config key {key!r} in the search space; "
                f"valid keys: {', '.join(sorted(fields))}"
            )
        if isinstance(dim, list):
            if not dim:
                raise ConfigError(f"{where}.{key}: an empty list of values")
            values = [_numeric_string(v) for v in dim]
            out[key] = values if all(isinstance(v, float) for v in values) else list(dim)
            continue
        if not (isinstance(dim, Mapping) and len(dim) == 1 and next(iter(dim)) in _SPACE_KINDS):
            raise ConfigError(
                f"{where}.{key}: expected a list of values or {{log_uniform: [lo, hi]}} "
                "(also spelled loguniform) or {uniform: [lo, hi]}"
            )
        written, bounds = next(iter(dim.items()))
        kind = _SPACE_KINDS[written]
        if not (isinstance(bounds, list) and len(bounds) == 2):
            raise ConfigError(f"{where}.{key}.{written}: expected [lo, hi]")
        lo, hi = (_number(b, f"{where}.{key}.{written}") for b in bounds)
        if not lo < hi:
            raise ConfigError(f"{where}.{key}.{written}: expected [lo, hi] with lo < hi")
        if kind == "log_uniform" and lo <= 0:
            raise ConfigError(f"{where}.{key}.{written}: bounds must be positive")
        out[key] = {kind: [lo, hi]}
    return out


class TuningSection(Strict):
    """The suite's ``tuning:`` mapping (docs/suites.md, "Tuning")."""

    trials: Annotated[int, pydantic.Strict(), pydantic.Field(ge=1)] = 4
    seeds: list[Annotated[int, pydantic.Strict()]] = pydantic.Field(default=[0], min_length=1)
    metric: Literal[tuple(METRICS)] = "dev_loss"  # type: ignore[valid-type]
    strategy: Literal[STRATEGIES] = "joint"  # type: ignore[valid-type]
    # true: DEFAULT_EXTENSIONS extensions; false: none; or a count
    extend_edges: Annotated[int, pydantic.Strict(), pydantic.Field(ge=0)] | bool = False
    seed: Annotated[int, pydantic.Strict()] = 0


def plan_tuning(section: TuningSection, spaces: dict[str, dict[str, Any]]) -> TuningPlan:
    """A validated ``tuning:`` section as a TuningPlan over `spaces`."""
    extend = section.extend_edges
    if type(extend) is bool:
        extend = DEFAULT_EXTENSIONS if extend else 0
    return TuningPlan(
        section.trials,
        list(section.seeds),
        section.metric,
        dict(spaces),
        section.strategy,
        extend,
        section.seed,
    )


def _seed(base: int, *parts: Any) -> int:
    """A seed per (method, stage, round): independent sequences, the same on every machine."""
    return (base * 1_000_003 + zlib.crc32("/".join(map(str, parts)).encode())) % 2**32


def sample_points(space: Mapping[str, Any], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` quasi-random points of `space` (scrambled Halton, seeded); lists are sampled as
    categorical dimensions. Dimensions are taken in the order of `space`."""
    from scipy.stats import qmc

    keys = list(space)
    unit = qmc.Halton(d=len(keys), scramble=True, seed=seed).random(n)
    points = []
    for row in unit:
        point = {}
        for u, key in zip(row, keys, strict=True):
            dim = space[key]
            if isinstance(dim, list):
                point[key] = dim[min(int(u * len(dim)), len(dim) - 1)]
                continue
            kind, (lo, hi) = next(iter(dim.items()))
            lo, hi = float(lo), float(hi)
            if kind == "log_uniform":
                value = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
            else:
                value = lo + u * (hi - lo)
            point[key] = float(f"{value:.3g}")  # readable settings in tables and files
        points.append(point)
    return points


def _default(config_class: type, key: str) -> Any:
    for f in dataclasses.fields(config_class):
        if f.name == key:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    return None


def _extend(dim: Any, side: str, chosen: float) -> dict[str, list[float]]:
    """The range past `side` of `dim`, as wide as `dim` (in log units for log_uniform)."""
    kind, (lo, hi) = next(iter(dim.items()))
    if kind == "log_uniform":
        ratio = hi / lo
        if side == "high":
            start = max(hi, chosen)
            return {kind: [start, float(f"{start * ratio:.3g}")]}
        end = min(lo, chosen)
        return {kind: [float(f"{end / ratio:.3g}"), end]}
    width = hi - lo
    if side == "high":
        start = max(hi, chosen)
        return {kind: [start, start + width]}
    end = min(lo, chosen)
    return {kind: [end - width, end]}


@dataclass
class _Group:
    """The tuning of one (method, task, model): its stages, rounds and points."""

    spec: Any  # the first final spec of the group: the template of its tuning trials
    space: dict[str, Any]
    stages: list[list[str]]
    plan: TuningPlan
    config_class: type
    stage: int = 0
    round: int = 0
    ranges: dict[str, Any] = field(default_factory=dict)  # the current round's ranges
    searched: dict[str, list[Any]] = field(default_factory=dict)  # key -> ranges, in order
    fixed: dict[str, Any] = field(default_factory=dict)  # chosen values of earlier stages
    incumbent: dict[str, Any] | None = None  # the best point of earlier stages
    points: list[dict[str, Any]] = field(default_factory=list)  # every point, with its stage
    edges: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges_now: dict[str, str] = field(default_factory=dict)  # keys extended this round
    notes: list[str] = field(default_factory=list)
    done: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.spec.method, self.spec.task, self.spec.model)

    def base(self, key: str) -> Any:
        """The value of a not-yet-searched key: the suite's config (or the default)."""
        return getattr(self.spec.method_config, key, _default(self.config_class, key))

    def full(self, point: Mapping[str, Any]) -> dict[str, Any]:
        return {k: point.get(k, self.base(k)) for k in self.space}

    def next_points(self) -> list[dict[str, Any]]:
        """The points of the current (stage, round); [] when finished."""
        if self.done:
            return []
        keys = self.stages[self.stage]
        if self.round == 0:
            self.ranges = {k: self.space[k] for k in keys}
        searched = {k: self.ranges[k] for k in keys}
        extended = [k for k in keys if self.round == 0 or k in self.edges_now]
        n = self.plan.trials * len(extended)
        seed = _seed(self.plan.seed, self.spec.method, "+".join(keys), self.round)
        sampled = sample_points(searched, n, seed)
        if all(isinstance(searched[k], list) for k in keys):
            import itertools

            grid = [dict(zip(keys, c, strict=True)) for c in itertools.product(*searched.values())]
            if len(grid) <= n:
                sampled = grid
        out, seen = [], {config_key(p["settings"]) for p in self.points}
        for p in sampled:
            settings = {**self.fixed, **p}
            if config_key(settings) in seen:
                continue
            seen.add(config_key(settings))
            out.append(settings)
        for k in extended:
            self.searched.setdefault(k, []).append(self.ranges[k])
        for s in out:
            self.points.append({"settings": s, "stage": self.stage + 1, "round": self.round})
        return out

    def update(self, records: list[TrialRecord]) -> None:
        """Choose within the current stage from `records`; extend, advance or finish."""
        keys = self.stages[self.stage]
        stage_points = [p for p in self.points if p["stage"] == self.stage + 1]
        candidates = [p["settings"] for p in stage_points]
        if self.incumbent is not None:
            candidates.append(self.incumbent)
        wanted = {config_key(c) for c in candidates}
        mine = [r for r in records if config_key(r.config.get("tuning_point") or {}) in wanted]
        choices = choose(mine, self.plan.metric) if mine else []
        if not choices or choices[0].dev_value is None:
            best = self.incumbent or (candidates[0] if candidates else {})
        else:
            best = choices[0].chosen
        sides = edge_sides([self.full(c) for c in candidates], self.full(best), keys)
        numeric = {k: s for k, s in sides.items() if not isinstance(self.space[k], list)}
        if numeric and self.round < self.plan.extend_edges:
            new_ranges, ok = dict(self.ranges), {}
            for k, side in numeric.items():
                candidate = _extend(self.ranges[k], side, float(self.full(best)[k]))
                try:
                    probe = sample_points({k: candidate}, 1)[0]
                    build(
                        self.config_class,
                        {**settings(self.spec.method_config), **best, **probe},
                        "x",
                    )
                except ConfigError as e:
                    self.notes.append(f"{k}: not extended past its {side} edge ({e})")
                    continue
                new_ranges[k], ok[k] = candidate, side
            if ok:
                for k, side in ok.items():
                    _console(
                        f"tuning: {self.spec.method} on {self.spec.task}: {k}={self.full(best)[k]:g}"
                        f" is the {'highest' if side == 'high' else 'lowest'} value tried; "
                        f"extending the range to {new_ranges[k]}"
                    )
                self.ranges, self.edges_now, self.round = new_ranges, ok, self.round + 1
                return
        for k, side in sides.items():
            value = self.full(best)[k]
            ranges = self.searched.get(k, [])
            self.edges[k] = {"side": side, "value": value, "extensions": len(ranges) - 1}
            _console(
                f"tuning: {self.spec.method} on {self.spec.task}: {k}={value:g} is at the "
                f"{side} edge of what was tried ({', '.join(json.dumps(r) for r in ranges)}); "
                "the best value may lie outside the range"
            )
        self.incumbent = best
        self.fixed.update({k: best[k] for k in keys if k in best})
        self.stage, self.round, self.edges_now = self.stage + 1, 0, {}
        self.done = self.stage >= len(self.stages)


def _console(line: str) -> None:
    """One line to the console (the CLI's logging also writes to stderr: not both)."""
    print(line, file=sys.stderr, flush=True)


def _groups(specs: Sequence[Any], plan: TuningPlan) -> list[_Group]:
    from bench.registry import load_method

    out, seen = [], set()
    for spec in specs:
        space = plan.spaces.get(spec.method)
        key = (spec.method, spec.task, spec.model)
        if not space or key in seen:
            continue
        seen.add(key)
        keys = list(space)
        stages = [[k] for k in keys] if plan.strategy == "staged" else [keys]
        out.append(_Group(spec, space, stages, plan, load_method(spec.method).config_class))
    return out


def _specs_for(group: _Group, points: list[dict[str, Any]], plan: TuningPlan) -> list[Any]:
    spec = group.spec
    dev = spec.dev if spec.dev.eval_every else replace(spec.dev, eval_every=spec.train.steps)
    out = []
    for point in points:
        config = with_settings(spec.method_config, point, f"tuning point of {spec.method}")
        for seed in plan.seeds:
            out.append(
                replace(
                    spec, seed=seed, method_config=config, dev=dev, phase="tune", tuning_point=point
                )
            )
    return out


def tuning_specs(specs: Sequence[Any], plan: TuningPlan) -> list[Any]:
    """The tuning trials known before any has run: the first stage's points of every
    searched (method, task, model), each on every tuning seed (later stages and edge
    extensions depend on the results; `describe` says what they will be)."""
    return [s for g in _groups(specs, plan) for s in _specs_for(g, g.next_points(), plan)]


def run_tuning(
    specs: Sequence[Any],
    plan: TuningPlan,
    run_dir: Path,
    sweep: Callable[[list[Any]], Any],
) -> tuple[list[Choice], list[Any]]:
    """Run every stage and round of the tuning through `sweep` (a list of specs -> a
    Sweep; finished trials are skipped by it), write ``tuning.json`` and return each
    group's Choice and the sweeps. Stages of different groups run side by side."""
    from bench import store

    groups = _groups(specs, plan)
    sweeps, ids = [], set()
    while True:
        batch = []
        for g in groups:
            batch += _specs_for(g, g.next_points(), plan)
        if not batch:
            break
        sweeps.append(sweep(batch))
        ids |= {s.trial_id for s in batch}
        records = [r for r in store.read_trials(run_dir) if r.trial_id in ids]
        for g in groups:
            if not g.done:
                g.update([r for r in records if (r.method, r.task, r.model) == g.key])
    records = [r for r in store.read_trials(run_dir) if r.trial_id in ids]
    choices = [_final_choice(g, records) for g in groups]
    write_tuning_json(run_dir, plan, choices)
    return choices, sweeps


def _final_choice(group: _Group, records: list[TrialRecord]) -> Choice:
    """The best point over every stage, with every point tried and the edge flags."""
    mine = [r for r in records if (r.method, r.task, r.model) == group.key]
    chosen = choose(mine, group.plan.metric)
    method, task, model = group.key
    if not chosen:
        choice = Choice(method, task, model, group.plan.metric, 0, {}, None)
    else:
        choice = chosen[0]
    where = {config_key(p["settings"]): p for p in group.points}
    for t in choice.tried:
        p = where.get(config_key(t["settings"]), {})
        t["stage"], t["round"] = p.get("stage"), p.get("round")
    # A stage's flag holds when the final choice has that stage's value (the winner of a
    # later stage may be an earlier one's point: e.g. zo_lr at its config value, lowest).
    final = group.full(choice.chosen)
    choice.edges = {k: v for k, v in group.edges.items() if final.get(k) == v["value"]}
    choice.searched = dict(group.searched)
    choice.notes = list(group.notes)
    return choice


def write_tuning_json(run_dir: Path, plan: TuningPlan, choices: Sequence[Choice]) -> None:
    (Path(run_dir) / "tuning.json").write_text(
        json.dumps(
            {
                "budget": plan.trials,  # points per searched dimension
                "seeds": plan.seeds,
                "metric": plan.metric,
                "strategy": plan.strategy,
                "extend_edges": plan.extend_edges,
                "spaces": plan.spaces,
                "choices": [c.to_dict() for c in choices],
            },
            indent=1,
        )
    )


def describe(specs: Sequence[Any], plan: TuningPlan) -> list[str]:
    """What the tuning will run, for a dry run: per (method, task, model) its budget, the
    first stage's points and what later stages and extensions search."""
    lines = [
        f"tuning: {plan.trials} points per searched dimension, {plan.strategy}, seeds "
        f"{plan.seeds}, by the final {plan.metric}; edge extensions: {plan.extend_edges or 'off'}"
    ]
    for g in _groups(specs, plan):
        budget = plan.budget(g.spec.method)
        model = Path(g.spec.model).name or g.spec.model
        lines.append(
            f"  {g.spec.method} on {g.spec.task} ({model}): {budget} points x "
            f"{len(plan.seeds)} seed(s)"
        )
        for i, keys in enumerate(g.stages):
            fixed = [k for k in g.space if k not in keys]
            if i == 0:
                points = g.next_points()
                at = ", ".join(f"{k}={g.base(k)}" for k in fixed if k not in points[0])
                lines.append(
                    f"    stage {i + 1}: {'+'.join(keys)}" + (f" (with {at})" if at else "")
                )
            else:
                seed = _seed(plan.seed, g.spec.method, "+".join(keys), 0)
                points = sample_points({k: g.space[k] for k in keys}, plan.trials * len(keys), seed)
                earlier = [k for s in g.stages[:i] for k in s]
                lines.append(
                    f"    stage {i + 1}: {'+'.join(keys)} with {', '.join(earlier)} fixed at "
                    "the earlier stages' choice"
                )
            for p in points:
                lines.append(
                    "      "
                    + ", ".join(
                        f"{k}={p[k]:g}" if isinstance(p[k], float) else f"{k}={p[k]}" for k in keys
                    )
                )
    return lines


def _inherited(spec: Any, chosen: Mapping[tuple, dict], configs: Mapping[tuple, dict]) -> dict:
    """What a variant ``base[...]`` without a search of its own takes from its base's
    choice: the tuned keys it leaves as the base has them (an ablation differs in one
    switch, so hizfo[random] trains at hizfo's tuned rates); a key the variant sets to
    its own value (hizfo[zo-lr-10x]'s zo_lr) stays its own."""
    from bench.registry import split_variant

    base, variant = split_variant(spec.method)
    key = (base, spec.task, spec.model)
    if variant is None or key not in chosen or key not in configs:
        return {}
    mine, base_config = settings(spec.method_config), settings(configs[key])
    return {k: v for k, v in chosen[key].items() if mine.get(k) == base_config.get(k)}


def final_specs(specs: Sequence[Any], choices: Sequence[Choice]) -> list[Any]:
    """The suite's specs with each tuned method's chosen settings (and a variant's
    inherited ones, `_inherited`)."""
    chosen = {(c.method, c.task, c.model): c.chosen for c in choices}
    configs = {(s.method, s.task, s.model): s.method_config for s in specs}
    out = []
    for spec in specs:
        point = chosen.get((spec.method, spec.task, spec.model)) or _inherited(
            spec, chosen, configs
        )
        if not point:
            out.append(spec)
        else:
            config = with_settings(spec.method_config, point, f"tuned point of {spec.method}")
            out.append(replace(spec, method_config=config, tuning_point=point))
    return out


def planned_trials(specs: Sequence[Any], plan: TuningPlan) -> int:
    """Tuning trials before any edge extension: every stage's points x tuning seeds."""
    return sum(plan.budget(g.spec.method) * len(plan.seeds) for g in _groups(specs, plan))
