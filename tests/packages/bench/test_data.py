import pytest

from bench.data import TargetTooLongError, batch_stream, collate, truncation_counts
from bench.tasks.base import Example


def test_collate_masks_prompt_and_appends_eos(tiny):
    _, tok = tiny
    exs = [Example("Question: 1+1?\nAnswer:", " 2\n#### 2"), Example("Q: x\nA:", " longer y z")]
    batch = collate(exs, tok, max_length=64)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape == mask.shape
    for i, ex in enumerate(exs):
        n_prompt = len(tok(ex.prompt, add_special_tokens=False)["input_ids"])
        assert (labels[i, :n_prompt] == -100).all()
        target = labels[i][labels[i] != -100].tolist()
        assert target[-1] == tok.eos_token_id
        assert tok.decode(target[:-1]) == ex.target
    # padding is masked out of both attention and loss
    assert (labels[mask == 0] == -100).all()


def test_collate_truncates(tiny):
    _, tok = tiny
    batch = collate([Example("a " * 50, " b " * 5)], tok, max_length=16)
    assert batch["input_ids"].shape[1] == 16


def test_collate_cuts_the_prompt_from_the_left_and_keeps_the_target(tiny):
    _, tok = tiny
    ex = Example("one two three four five six seven eight nine ten " * 4, " the answer")
    prompt = tok(ex.prompt, add_special_tokens=False)["input_ids"]
    target = tok(ex.target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    batch = collate([ex], tok, max_length=len(target) + 5)
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    assert len(ids) == len(target) + 5
    assert ids == prompt[-5:] + target  # the prompt's tail, then the whole target
    assert labels == [-100] * 5 + target


def test_a_batch_of_long_prompts_still_has_target_tokens(tiny):
    _, tok = tiny
    exs = [Example("word " * 200, " yes"), Example("text " * 300, " no")]
    labels = collate(exs, tok, max_length=16)["labels"]
    assert ((labels != -100).sum(dim=1) >= 2).all()  # every row: its target and EOS


def test_truncation_counts_and_the_target_check(tiny):
    _, tok = tiny
    exs = [Example("short", " a"), Example("long " * 100, " b"), Example("x", " c")]
    counts = truncation_counts(exs, tok, max_length=32)
    assert counts.to_dict() == {"examples": 3, "prompt_truncated": 1, "max_length": 32}
    too_long = [Example("p", " z" * 40)]
    with pytest.raises(TargetTooLongError, match="example 0: a target of .* max_length 16"):
        truncation_counts(too_long, tok, max_length=16)
    with pytest.raises(TargetTooLongError):
        collate(too_long, tok, max_length=16)


def test_batch_stream_is_seeded():
    exs = [Example(str(i), str(i)) for i in range(10)]
    a = [b for _, b in zip(range(7), batch_stream(exs, 3, seed=1), strict=False)]
    b = [b for _, b in zip(range(7), batch_stream(exs, 3, seed=1), strict=False)]
    c = [b for _, b in zip(range(7), batch_stream(exs, 3, seed=2), strict=False)]
    assert a == b and a != c
    assert all(len(x) == 3 for x in a)


def _trial(task: str, max_length: int) -> dict:
    from bench.spec import TrainConfig, TrialSpec
    from bench.train.recipe import run_trial

    return run_trial(
        TrialSpec(
            method="fo-adamw",
            task=task,
            model="tiny",
            seed=0,
            method_config={"lr": 1e-3},
            phase="tune",  # no test scoring: the data layer is what is under test
            train=TrainConfig(steps=2, batch_size=4, max_length=max_length, train_examples=32),
        )
    )


def test_a_trial_records_truncated_prompts_and_trains_on_their_targets():
    record = _trial("docstring-summary", 160)  # tiny's char-level prompts exceed 160
    assert record["status"] == "ok", record["error"]
    cut = record["truncation"]["train"]
    assert cut["examples"] == 32 and 0 < cut["prompt_truncated"] <= 32
    assert all(point["loss"] == point["loss"] for point in record["curve"])  # no NaN


def test_a_target_longer_than_max_length_stops_the_trial_before_training():
    record = _trial("docstring-summary", 24)
    assert record["status"] == "failed" and record["steps"] == 0
    assert record["error"].startswith("TargetTooLongError: example ")
