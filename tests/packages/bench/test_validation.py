"""Every bad setting stops `hizfo-bench run` before anything starts: one line naming the
key, the value and what is allowed, exit status 2, and no run directory left behind."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import yaml

from bench.cli import main
from bench.config import ConfigError, adapter, build
from bench.spec import DevConfig, EvalConfig, TrainConfig
from bench.suite import SUITES_DIR, resolve_suite_path

SUITE = {"models": ["tiny"], "tasks": ["math-mini"], "methods": ["none"]}


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def _suite(tmp_path: Path, **patch) -> str:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**SUITE, **patch}))
    return str(path)


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"train": {"dtype": "float8"}}, ".dtype: 'float8' is not allowed: must be one of float32"),
        ({"train": {"precision": "fp16"}}, ".precision: 'fp16' is not allowed: must be one of"),
        (
            {"methods": {"fo-adamw": {"config": {"lr": math.nan}}}},
            "methods.fo-adamw.config.lr: nan is not allowed: must be a finite number",
        ),
        (
            {"methods": {"mezo": {"config": {"eps": math.inf}}}},
            "config.eps: inf is not allowed: must be a finite number",
        ),
        (
            {"methods": {"mezo": {"config": {"lr": -1e-6}}}},
            "config.lr: -1e-06 is not allowed: must be >= 0",
        ),
        ({"train": {"batch_size": 0}}, ".batch_size: 0 is not allowed: must be >= 1"),
        ({"eval": {"limit": -5}}, ".limit: -5 is not allowed: must be >= 1"),
        # negative steps are a steps problem, not an eval_every one
        ({"train": {"steps": -3}, "dev": {"eval_every": 2}}, ".steps: -3 is not allowed"),
        ({"dev": {"eval_every": -1}}, ".eval_every: -1 is not allowed: must be >= 0"),
        ({"train": {"steps": True}}, ".steps: True is not allowed: must be an integer"),
        ({"measure": {"radius": math.inf}}, ".radius: inf is not allowed"),
        ({"dev": {"score": "yes"}}, ".score: 'yes' is not allowed: must be true or false"),
        (
            {"seeds": [0, -1]},
            "s.yaml.seeds: expected a list of integers in 0..9223372036854775807, got [0, -1]",
        ),
        # search spaces: every value they can produce passes the config's checks
        (
            {"methods": {"mezo": {"search": {"lr": [1e-5, math.nan]}}}},
            "methods.mezo.search.lr: nan is not allowed: must be a finite number",
        ),
        (
            {"methods": {"mezo": {"search": {"eps": {"uniform": [0.001, math.inf]}}}}},
            "methods.mezo.search.eps: inf is not allowed: must be a finite number",
        ),
        (
            {"methods": {"mezo": {"search": {"q": [1, -2]}}}},
            "methods.mezo.search.q: -2 is not allowed: must be >= 0",
        ),
    ],
)
def test_bad_settings_stop_the_run_before_it_starts(tmp_path, capsys, patch, message):
    out = tmp_path / "run"
    code, err = _run(["run", "--suite", _suite(tmp_path, **patch), "--out", str(out)], capsys)
    assert code == 2
    assert err.count("\n") == 0 and err.startswith("hizfo-bench: error: s.yaml."), err
    assert message in err
    assert not out.exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--num-cpus", "0"], "--num-cpus 0: must be >= 1"),
        (["--cpus-per-trial", "0"], "--cpus-per-trial 0: must be >= 1"),
        (["--max-retries", "-1"], "--max-retries -1: must be >= 0"),
        (
            ["--cpus-per-trial", str((os.cpu_count() or 1) + 1)],
            f"this machine has {os.cpu_count()} CPUs",
        ),
        (["--num-cpus", "1", "--cpus-per-trial", "2"], "--num-cpus has 1 CPUs"),
    ],
)
def test_bad_flags_are_one_line_and_leave_no_run_dir(tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out = tmp_path / "run"
    code, err = _run(["run", "--suite", _suite(tmp_path), "--out", str(out), *flags], capsys)
    assert (code, err.count("\n")) == (2, 0), err
    assert message in err
    assert not out.exists()


def test_out_naming_a_file_is_an_error(tmp_path, capsys):
    out = tmp_path / "results.txt"
    out.write_text("mine")
    code, err = _run(["run", "--suite", _suite(tmp_path), "--out", str(out)], capsys)
    assert (code, err.count("\n")) == (2, 0)
    assert "is a file; give a run directory" in err
    assert out.read_text() == "mine"
    code, err = _run(["run", "--suite", _suite(tmp_path), "--out", str(out / "run")], capsys)
    assert (code, err.count("\n")) == (2, 0)
    assert f"--out {out / 'run'}: {out} is a file, not a folder" in err


def test_yaml_errors_are_one_line_with_file_line_column(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nmodels: [tiny\ntasks: [math-mini]\n")
    code, err = _run(["run", "--suite", str(path), "--out", str(tmp_path / "r")], capsys)
    assert (code, err.count("\n")) == (2, 0), err
    assert f"{path}:3:6: invalid YAML: expected ',' or ']'" in err
    # a --set value that is not YAML: one line too, the position within the value
    code, err = _run(["run", "--suite", _suite(tmp_path), "--set", "train.steps=[1"], capsys)
    assert (code, err.count("\n")) == (2, 0), err
    assert "--set 'train.steps=[1':1:3: invalid YAML: expected ',' or ']'" in err


def test_suite_paths_files_folders_and_bundled_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # A run directory named like a bundled suite (`--suite smoke --out smoke`, run twice)
    # does not shadow the bundled suite.
    (tmp_path / "smoke").mkdir()
    assert resolve_suite_path("smoke") == SUITES_DIR / "smoke.yaml"
    # ... but a path to a file wins over the bundled name.
    (tmp_path / "mini").write_text("models: [tiny]\n")
    assert resolve_suite_path("mini") == Path("mini")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ConfigError, match="'folder' is a directory, not a suite file"):
        resolve_suite_path("folder")
    with pytest.raises(ConfigError, match="suite file 'none.yaml' does not exist"):
        resolve_suite_path("none.yaml")
    with pytest.raises(ConfigError, match="unknown suite 'nope'; bundled suites: .*smoke"):
        resolve_suite_path("nope")


def test_generic_rules_reach_every_config():
    # every numeric field: finite and >= 0 unless it declares otherwise
    for cls in (TrainConfig, EvalConfig, DevConfig):
        for name, prop in adapter(cls).model_json_schema()["properties"].items():
            kinds = [prop, *prop.get("anyOf", [])]
            for kind in kinds:
                if kind.get("type") in ("integer", "number"):
                    assert kind.get("minimum", kind.get("exclusiveMinimum")) is not None, name
    assert build(TrainConfig, {"dtype": "bfloat16"}, "t").dtype == "bfloat16"
    assert build(EvalConfig, {"limit": None}, "e").limit is None
    with pytest.raises(ConfigError, match=r"^t\.train_examples: 0 is not allowed: must be >= 1$"):
        build(TrainConfig, {"train_examples": 0}, "t")


def test_method_configs_declare_bounds_and_choices_in_field_metadata():
    from dataclasses import dataclass, field

    @dataclass
    class Config:
        shift: float = field(default=0.0, metadata={"allow_negative": True})
        momentum: float = field(default=0.9, metadata={"ge": 0, "lt": 1})
        kind: str = field(default="a", metadata={"choices": ("a", "b")})

    assert build(Config, {"shift": -2.0}, "m").shift == -2.0
    with pytest.raises(ConfigError, match=r"m\.shift: nan is not allowed: must be a finite"):
        build(Config, {"shift": math.nan}, "m")
    with pytest.raises(ConfigError, match=r"m\.momentum: 1\.0 is not allowed: must be < 1"):
        build(Config, {"momentum": 1.0}, "m")
    with pytest.raises(ConfigError, match=r"m\.kind: 'c' is not allowed: must be one of a, b"):
        build(Config, {"kind": "c"}, "m")


def test_suite_schema_is_current():
    """docs/suite.schema.json is generated from the configs; regenerate it with
    `hizfo-bench run --schema builtin > docs/suite.schema.json` when this fails."""
    from bench.suite import builtin_methods, suite_schema

    committed = Path(__file__).parents[3] / "docs" / "suite.schema.json"
    assert json.loads(committed.read_text()) == suite_schema(builtin_methods())


def test_bundled_suites_match_the_schema_and_a_bad_setting_does_not():
    jsonschema = pytest.importorskip("jsonschema")
    from bench.suite import suite_schema

    validator = jsonschema.Draft202012Validator(suite_schema())
    for path in sorted(SUITES_DIR.glob("*.yaml")):
        errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
        assert not errors, (path.name, errors[:3])
    bad = {**SUITE, "train": {"dtype": "float8", "batch_size": 0}}
    assert len(list(validator.iter_errors(bad))) == 2


def test_a_lora_module_the_model_lacks_stops_the_run_before_it_starts(tmp_path, capsys):
    out = tmp_path / "run"
    suite = _suite(tmp_path, methods={"lora": {"config": {"target_modules": ["q_proj", "qkv"]}}})
    code, err = _run(["run", "--suite", suite, "--out", str(out)], capsys)
    assert (code, err.count("\n")) == (2, 0), err
    assert "s.yaml.methods.lora.config (model tiny): lora target_modules: the model has no " in err
    assert "module 'qkv'; its linear layers: down_proj, gate_proj, k_proj" in err
    assert not out.exists()


def test_lora_on_an_opt_folder_names_its_fallback_before_anything_runs(tmp_path, caplog):
    from transformers import OPTConfig

    from bench.suite import expand

    folder = tmp_path / "opt"
    OPTConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, ffn_dim=32,
        num_attention_heads=2, max_position_embeddings=32, word_embed_proj_dim=16,
    ).save_pretrained(folder)  # fmt: skip
    with caplog.at_level("WARNING", logger="hizfo_bench.lora"):
        (spec,) = expand({**SUITE, "models": [str(folder)], "methods": ["lora"]})
    assert "the model has no o_proj; adapting out_proj" in caplog.text
    assert spec.method_config.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
