"""Discovery from the command line: suites, cp, run --print-config, methods NAME, and the
help of every subcommand the docs name."""

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from bench.cli import SUBCOMMANDS, build_parser, main
from bench.registry import config_fields, load_method
from bench.spec import TrialSpec
from bench.suite import SUITES_DIR, load_plan, read_suite

ROOT = Path(__file__).resolve().parents[3]
# `hizfo-bench VERB` in backticks, at the start of a code line (after an optional `$ `)
# or after a venv's bin/: how the docs show a command.
_DOC_COMMAND = re.compile(r"(?:`|^[ \t]*(?:\$ )?|bin/)hizfo-bench ([a-z][a-z-]*)", re.M)


def _documented_verbs() -> dict[str, set[str]]:
    verbs: dict[str, set[str]] = {}
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for match in _DOC_COMMAND.finditer(page.read_text()):
            verbs.setdefault(match.group(1), set()).add(page.name)
    return verbs


def test_every_documented_subcommand_has_working_help(capsys):
    verbs = _documented_verbs()
    assert {"run", "report", "compare", "methods", "tasks", "suites", "cp"} <= set(verbs)
    known = set(build_parser()._subparsers._group_actions[0].choices)
    for verb, pages in sorted(verbs.items()):
        assert verb in known, f"{', '.join(sorted(pages))} document `hizfo-bench {verb}`"
        with pytest.raises(SystemExit) as done:
            main([verb, "--help"])
        assert done.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: hizfo-bench {verb}")


def test_top_level_help_lists_every_subcommand_and_defaults_show(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    listed = set(re.findall(r"^    ([a-z-]+)  ", out, re.M))
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert listed == commands and {"suites", "cp", "run"} <= commands
    assert "catalog" not in commands and len(SUBCOMMANDS) < len(commands)  # catalog has 4
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "(default: mini)" in out and "examples:\n  hizfo-bench run --suite smoke" in out
    assert "(default: None)" not in out and "(default: False)" not in out


def test_suites_lists_each_bundled_suite_with_its_trial_count(capsys):
    assert main(["suites"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:-1]}
    assert set(rows) == {p.stem for p in SUITES_DIR.glob("*.yaml")}
    for name in ("smoke", "mini"):
        suite = load_plan(name, check_sources=False)
        description = read_suite(name)[1]["description"]
        assert rows[name].split()[1] == str(len(suite.specs))
        assert rows[name].endswith(description)
    assert "tuning)" in rows["mini-tune"]


def test_cp_copies_a_bundled_suite_and_refuses_to_overwrite(tmp_path, capsys):
    target = tmp_path / "mine.yaml"
    assert main(["cp", "smoke", str(target)]) == 0
    # The copy is the suite named after its file: its runs do not land beside smoke's.
    original = (SUITES_DIR / "smoke.yaml").read_text()
    assert target.read_text() == original.replace("\nname: smoke\n", "\nname: mine\n", 1)
    assert load_plan(str(target), check_sources=False).name == "mine"
    target.write_text("edited")
    assert main(["cp", "smoke", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "exists; pass --force" in err
    assert target.read_text() == "edited"
    assert main(["cp", "smoke", str(target), "--force"]) == 0
    assert main(["cp", "smoke", str(tmp_path)]) == 0 and (tmp_path / "smoke.yaml").is_file()
    assert main(["cp", "no-such-suite", str(tmp_path / "x.yaml")]) == 2
    assert "unknown suite 'no-such-suite'" in capsys.readouterr().err


def test_print_config_gives_each_resolved_spec_and_the_tuning_points(capsys):
    assert main(["run", "--suite", "mini-tune", "--print-config", "--set", "train.steps=7"]) == 0
    out = capsys.readouterr().out
    trials = yaml.safe_load(out)  # the tuning plan is in comments: the output parses
    suite = load_plan("mini-tune", check_sources=False, overrides=["train.steps=7"])
    assert [t["trial_id"] for t in trials] == [s.trial_id for s in suite.specs]
    assert 7 in {t["train"]["steps"] for t in trials}  # --set reached the specs
    for t in trials:
        assert TrialSpec.from_dict(t).trial_id == t.pop("trial_id")  # complete specs
    # Every stage's points with their values.
    assert re.search(r"^#     stage 1: lr$", out, re.M)
    assert re.search(r"^#       lr=[0-9.e+-]+$", out, re.M)


def test_methods_name_shows_fields_types_defaults_and_docs(capsys, monkeypatch):
    assert main(["methods", "mezo"]) == 0
    out = capsys.readouterr().out
    config = load_method("mezo").config_class
    for f in dataclasses.fields(config):
        line = next(x for x in out.splitlines() if x.split()[:1] == [f.name])
        assert f"= {f.default!r}" in line
    assert re.search(r"^  eps\s+float\s+= 0.001\s+perturbation scale$", out, re.M)
    # A doc cut to the terminal is shown whole with -v.
    monkeypatch.setenv("COLUMNS", "60")
    assert main(["methods", "hizfo"]) == 0
    cut = capsys.readouterr().out
    assert "`hizfo-bench methods hizfo -v` shows them whole" in cut
    assert main(["methods", "hizfo", "-v"]) == 0
    whole = " ".join(capsys.readouterr().out.split())
    for f in config_fields(load_method("hizfo").config_class):
        assert " ".join(f.doc.split()) in whole
    assert main(["methods", "no-such"]) == 2
    assert "unknown method 'no-such'" in capsys.readouterr().err


@dataclasses.dataclass
class _Documented:
    """A config.

    Attributes:
        alpha: from the docstring. More text that is
            not the first sentence.
    """

    alpha: float = 1.0
    # from the lines
    # above
    beta: int = 2
    gamma: str = "g"  # from the same line; and more
    delta: list[int] = dataclasses.field(default_factory=list, metadata={"doc": "from metadata"})
    epsilon: bool = False


def test_config_field_docs_come_from_docstring_comments_or_metadata():
    fields = {f.name: f for f in config_fields(_Documented)}
    assert fields["alpha"].doc == "from the docstring."
    assert fields["beta"].doc == "from the lines above"
    assert fields["gamma"].doc == "from the same line"
    assert fields["delta"].doc == "from metadata" and fields["delta"].default == "[]"
    assert fields["epsilon"].doc == "" and fields["epsilon"].type == "bool"
    assert fields["alpha"].type == "float" and fields["alpha"].default == "1.0"
