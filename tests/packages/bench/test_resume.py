"""settings_note: a resume into a run dir that holds this suite's cells run with other
settings says so in one line; settings that only changed form on disk are no difference."""

from __future__ import annotations

from helpers.records import make_record
from helpers.specs import make_spec

from bench import store
from bench.resume import settings_note


def _file(run_dir, spec) -> None:
    store.write_trial(
        run_dir, make_record("fo-adamw", trial_id=spec.trial_id, config=spec.to_dict())
    )


def test_a_tuned_trial_is_no_other_setting_even_with_a_tuple_in_its_config(tmp_path):
    # The final trial of a tuned run: lr chosen by tuning, betas a tuple in the spec and
    # a list in the file. Resuming the suite (lr at its pre-tuning value) is no change.
    tuned = make_spec("fo-adamw", {"lr": 1e-3, "betas": (0.9, 0.95)}, tuning_point={"lr": 1e-3})
    _file(tmp_path, tuned)
    again = make_spec("fo-adamw", {"lr": 1e-4, "betas": (0.9, 0.95)})
    assert again.trial_id != tuned.trial_id
    assert settings_note([again], tmp_path) is None


def test_an_edited_setting_is_named_in_one_line(tmp_path):
    old = make_spec("fo-adamw", {"lr": 1e-3, "betas": (0.9, 0.95)})
    _file(tmp_path, old)
    edited = make_spec("fo-adamw", {"lr": 1e-3, "betas": (0.9, 0.99)})
    note = settings_note([edited], tmp_path)
    assert note is not None and "\n" not in note
    assert "method_config.betas: [0.9, 0.95] there, [0.9, 0.99] now" in note
    assert old.trial_id in note
    assert settings_note([old], tmp_path) is None  # the same suite resumed: nothing to say
