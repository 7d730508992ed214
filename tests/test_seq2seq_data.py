"""The date-normalisation generator: real CLDR formats, deterministic, a function of its input, disjoint splits."""
from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict

import pytest
import torch
from babel.dates import format_date

from dl_ray.data.dates import DatesConfig, dates, decode, generate
from dl_ray.spec import SpecError, parse_spec
from tests.conftest import cli, write_job

ISO = re.compile(r"^(19|20)\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")


@pytest.fixture(scope="module")
def full():
    cfg = DatesConfig(name="dates")
    return cfg, generate(cfg), dates(cfg)


def test_generator_is_deterministic_and_seeded(full):
    cfg, (inputs, targets), bundle = full
    again = dates(DatesConfig(name="dates"))
    for split in ("train", "val", "test"):
        for a, b in zip(getattr(bundle, split).tensors, getattr(again, split).tensors):
            assert torch.equal(a, b)
    other, _ = generate(DatesConfig(name="dates", split_seed=1, num_examples=500))
    assert other != inputs[:500]


def test_splits_share_no_date_and_no_date_string(full):
    cfg, (inputs, targets), bundle = full
    n_train, n_val = len(bundle.train), len(bundle.val)
    assert (n_train, n_val, len(bundle.test)) == (34_000, 2_000, 4_000)
    cuts = [(0, n_train), (n_train, n_train + n_val), (n_train + n_val, len(inputs))]
    texts = [set(inputs[a:b]) for a, b in cuts]
    days = [{decode(row, bundle.meta["target_vocab"]) for row in s.tensors[1]} for s in (bundle.train, bundle.val, bundle.test)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not texts[i] & texts[j]
            assert not days[i] & days[j]
    assert days[2] == set(targets[n_train + n_val:])  # the tensors hold the ISO targets + <eos>
    assert bundle.meta["texts"]["test"] == inputs[n_train + n_val:]


def test_targets_are_iso_dates_1900_2099_and_each_input_has_one_answer(full):
    _, (inputs, targets), _ = full
    assert all(ISO.match(t) for t in targets)
    assert len(set(targets)) == len(targets)  # distinct dates
    answers = defaultdict(set)
    for text, target in zip(inputs, targets):
        answers[text].add(target)
    assert max(map(len, answers.values())) == 1
    years = {int(t[:4]) for t in targets}
    assert min(years) == 1900 and max(years) == 2099


def test_inputs_are_babel_cldr_formats():
    cfg = DatesConfig(name="dates", num_examples=300, locales=["fr_FR"], forms=["long"], weekday_prob=0, case_prob=0, space_prob=0)
    inputs, targets = generate(cfg)
    assert inputs == [format_date(dt.date.fromisoformat(t), "long", locale="fr_FR") for t in targets]
    cfg = cfg.model_copy(update={"locales": ["de_DE"], "forms": ["full"]})
    inputs, targets = generate(cfg)
    assert inputs == [format_date(dt.date.fromisoformat(t), "full", locale="de_DE") for t in targets]
    assert any("Januar" in s for s in inputs) and any(s.startswith("Sonntag, ") for s in inputs)


def test_short_years_get_four_digits_and_month_first_numbers_stay_unambiguous():
    cfg = DatesConfig(name="dates", num_examples=2000, locales=["en_US"], forms=["short"], weekday_prob=0, case_prob=0, space_prob=0)
    inputs, targets = generate(cfg)
    for text, target in zip(inputs, targets):
        day = dt.date.fromisoformat(target)
        if day.day > 12 or day.day == day.month:  # M/d/y can't be read as d/M/y
            assert text == f"{day.month}/{day.day}/{day.year}"
        else:
            assert text == format_date(day, "long", locale="en_US")


def test_noise_and_locales_show_up(full):
    _, (inputs, _), bundle = full
    assert sum(s.isupper() for s in inputs) > 300 and sum(s.islower() and any(c.isalpha() for c in s) for s in inputs) > 300
    assert sum(s != s.strip() or "  " in s for s in inputs) > 200
    for word in ("January", "janvier", "Januar", "enero", "gennaio", "januari", "janeiro", "Tuesday", "mardi"):
        assert any(word.lower() in s.lower() for s in inputs), word
    assert bundle.task == "seq2seq" and bundle.num_outputs == len(bundle.meta["target_vocab"])
    assert bundle.input_shape == (bundle.meta["max_source_len"],) and bundle.meta["max_target_len"] == 11


def test_bad_config_is_one_line_naming_the_field(tmp_path):
    with pytest.raises(SpecError, match=r"data\.locales: unknown locale 'xx_YY'"):
        parse_spec({"name": "j", "model": {"name": "attention_seq2seq"}, "data": {"name": "dates", "locales": ["en_US", "xx_YY"]}})
    with pytest.raises(SpecError, match=r"data\.forms\.0: .*'short', 'medium', 'long', 'full' or 'numeric'"):
        parse_spec({"name": "j", "model": {"name": "seq2seq"}, "data": {"name": "dates", "forms": ["iso"]}})
    job = write_job(tmp_path, "bad", model={"name": "attention_seq2seq"}, data={"name": "dates", "num_examples": 10**6})
    code, out, err = cli("train", str(job))
    assert code == 2 and err.count("\n") == 1 and "data.num_examples" in err
    assert not (tmp_path / "runs").exists()


def test_seq2seq_model_on_a_classification_dataset_is_refused(tmp_path):
    job = write_job(tmp_path, "wrong", model={"name": "seq2seq"}, data={"name": "digits"})
    code, _, err = cli("train", str(job))
    assert code == 2 and "learns seq2seq tasks" in err and "multiclass" in err
