"""After training, a trial's progress file names what it does: sharpness, then scoring
the test set, each its own phase (issue 35), not one `evaluating`."""

from __future__ import annotations

from helpers.specs import make_spec

from bench.measure.sharpness import SharpnessConfig
from bench.train import progress as progress_module


def test_sharpness_and_scoring_are_phases_of_their_own(tmp_path, monkeypatch):
    from bench.train.recipe import run_trial

    seen: list[str] = []
    write = progress_module.write_progress

    def recording(run_dir, trial_id, **fields):
        if not seen or seen[-1] != fields["phase"]:
            seen.append(fields["phase"])
        write(run_dir, trial_id, **fields)

    monkeypatch.setattr(progress_module, "write_progress", recording)
    measure = SharpnessConfig(sharpness=True, examples=64, directions=1, hessian_iters=0)
    spec = make_spec("fo-adamw", {"lr": 1e-3}, steps=2, log_every=2, limit=2, measure=measure)
    record = run_trial(spec, run_dir=tmp_path)
    assert record["status"] == "ok", record["error"]
    assert seen[-3:] == ["evaluating", "sharpness", "scoring"]
    assert seen.index("training") < seen.index("sharpness")
