"""The date-normalisation generator: real CLDR formats and written forms, deterministic, a function of its
input, held-out forms only in the test split (by id and by a format fingerprint computed here)."""
from __future__ import annotations

import calendar
import datetime as dt
import itertools
import re
from collections import defaultdict

import pytest
import torch
from babel import Locale
from babel.dates import format_date, get_day_names, get_month_names

from dl_ray.data.dates import HELD_OUT, DatesConfig, dates, decode, generate, parse_form, split_indices, written_forms
from dl_ray.spec import SpecError, parse_spec
from tests.conftest import cli, write_job

ISO = re.compile(r"^(19|20)\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")
LOCALES = ["en_US", "en_GB", "en_AU", "en_IN", "en_CA", "en_IE", "fr_FR", "de_DE", "es_ES", "it_IT", "nl_NL", "pt_BR", "pt_PT"]


@pytest.fixture(scope="module")
def full():
    cfg = DatesConfig(name="dates")
    return cfg, generate(cfg), dates(cfg)


def test_generator_is_deterministic_and_seeded(full):
    cfg, gen, bundle = full
    again = dates(DatesConfig(name="dates"))
    for split in ("train", "val", "test"):
        for a, b in zip(getattr(bundle, split).tensors, getattr(again, split).tensors):
            assert torch.equal(a, b)
    other = generate(DatesConfig(name="dates", split_seed=1, num_examples=500))
    assert other.inputs != gen.inputs[:500]


def test_splits_share_no_date_and_no_date_string(full):
    cfg, gen, bundle = full
    rows = split_indices(gen.held_out, cfg.val_fraction)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == tuple(len(rows[s]) for s in ("train", "val", "test"))
    assert len(bundle.val) == 2_000 and 0.09 < len(bundle.test) / len(gen.inputs) < 0.11
    texts = [{gen.inputs[i] for i in rows[s]} for s in ("train", "val", "test")]
    days = [{decode(row, bundle.meta["target_vocab"]) for row in s.tensors[1]} for s in (bundle.train, bundle.val, bundle.test)]
    for i, j in itertools.combinations(range(3), 2):
        assert not texts[i] & texts[j]
        assert not days[i] & days[j]
    assert days[2] == {gen.targets[i] for i in rows["test"]}  # the tensors hold the ISO targets + <eos>
    assert bundle.meta["texts"]["test"] == [gen.inputs[i] for i in rows["test"]]


def test_held_out_forms_are_only_in_the_test_split(full):
    cfg, gen, bundle = full
    rows = split_indices(gen.held_out, cfg.val_fraction)
    seen = {gen.forms[i] for i in rows["train"] + rows["val"]}
    assert set(bundle.meta["forms"]["test"]) == set(HELD_OUT) and not seen & set(HELD_OUT)
    assert len(seen) > 250  # most of the 174 written forms and the 13 x 9 Babel ones train
    assert set(written_forms()) - set(HELD_OUT) <= seen | {f for f in written_forms() if "_of_" in f}
    assert len(written_forms()) == 174 and all(parse_form(f, []).id == f for f in written_forms())


def _names(locales: list[str]) -> dict[tuple[int, str], str]:
    """(month or 10 + weekday, lower-case name) -> class, from calendar (English) and Babel's CLDR tables."""
    names = {}
    for m in range(1, 13):
        names[(m, calendar.month_name[m].lower())] = "MONTH"
        names.setdefault((m, calendar.month_abbr[m].lower()), "MON")
    for w in range(7):
        names[(10 + w, calendar.day_name[w].lower())] = "WD"
        names.setdefault((10 + w, calendar.day_abbr[w].lower()), "WDA")
    for loc in map(Locale.parse, locales):
        for width, label in (("wide", "MONTH"), ("abbreviated", "MON")):
            for m, name in get_month_names(width, locale=loc).items():
                names.setdefault((m, name.lower().rstrip(".")), label)
            for w, name in get_day_names(width, locale=loc).items():
                names.setdefault((10 + w, name.lower().rstrip(".")), "WD" if label == "MONTH" else "WDA")
    return names


def fingerprint(text: str, day: dt.date, names: dict) -> str:
    """The format of ``text`` with the date's own values replaced by what they are (Y, M, D, month and weekday
    names, ordinal suffixes); case and whitespace ignored. None when a May date or day == month makes two
    formats read alike."""
    if day.month == 5 or day.day == day.month:
        return None
    out = []
    for token in re.findall(r"\d+|[^\W\d_]+|[^\w\s]", text.lower()):
        if token.isdigit():
            n = int(token)
            out.append("Y" if len(token) == 4 and n == day.year else "D" if n == day.day else "M" if n == day.month else token)
        elif out and out[-1] == "D" and token in ("st", "nd", "rd", "th"):
            out.append("ORD")
        else:
            out.append(names.get((day.month, token)) or names.get((10 + day.weekday(), token)) or token)
    return " ".join(out)


def test_no_training_example_has_the_format_of_a_held_out_form(full):
    cfg, gen, _ = full
    names = _names(cfg.locales)
    prints = defaultdict(set)
    for text, target, held in zip(gen.inputs, gen.targets, gen.held_out):
        prints[held].add(fingerprint(text, dt.date.fromisoformat(target), names))
    prints[False].discard(None), prints[True].discard(None)
    assert len(prints[True]) >= len(HELD_OUT) and len(prints[False]) > 250
    assert not prints[True] & prints[False], sorted(prints[True] & prints[False])[:5]
    assert fingerprint("Sun, Jun 2nd, 1974", dt.date(1974, 6, 2), names) == "WDA , MON D ORD , Y"


def test_targets_are_iso_dates_1900_2099_and_each_input_has_one_answer(full):
    _, gen, _ = full
    assert all(ISO.match(t) for t in gen.targets)
    assert len(set(gen.targets)) == len(gen.targets)  # distinct dates
    answers = defaultdict(set)
    for text, target in zip(gen.inputs, gen.targets):
        answers[re.sub(r"\s+", " ", text.strip().lower())].add(target)
    assert max(map(len, answers.values())) == 1
    years = {int(t[:4]) for t in gen.targets}
    assert min(years) == 1900 and max(years) == 2099


def _weekday_width(form: str) -> str | None:
    """How a form writes the weekday: our _wd wide, _wdabbr abbreviated; Babel's E (abbreviated) in short,
    medium and numeric, EEEE (wide) in full and in long's variant (CLDR's full pattern); None: no weekday."""
    if form.endswith(("_wdabbr", "short_wd", "medium_wd", "numeric_wd")):
        return "abbreviated"
    return "wide" if form.endswith(("_wd", ":full")) else None


def test_every_weekday_is_the_dates_own(full):
    """Every form puts the weekday first: it must be the date's (Babel's CLDR names, which for English are
    Python's calendar's), and an English form without one names no weekday."""
    _, gen, _ = full
    english = {d.lower() for d in [*calendar.day_name, *calendar.day_abbr]}
    assert list(calendar.day_name) == [get_day_names("wide", locale="en_US")[i] for i in range(7)]
    checked = 0
    for text, target, form in zip(gen.inputs, gen.targets, gen.forms):
        day, width = dt.date.fromisoformat(target), _weekday_width(form)
        if width:
            locale = form.split(":")[1] if form.startswith("babel:") else "en_US"
            expected = get_day_names(width, locale=locale)[day.weekday()].lower().rstrip(".")
            first = re.match(r"\s*([^\W\d_]+(?:-[^\W\d_]+)?)", text)
            assert first and first[1].lower() == expected, (text, target, form)
            checked += 1
        elif not form.startswith("babel:"):
            assert not english & set(re.findall(r"[a-z]+", text.lower())), (text, form)
    assert checked > 0.15 * len(gen.inputs)


def _brute_force_readings(text: str) -> set[dt.date]:
    """Every date some strptime format of day, month and year (in an order people write, numeric or English
    month names) reads in ``text`` once the weekday, ordinal suffixes, "of", commas and extra spaces are gone."""
    s = text.strip().lower()
    first = re.match(r"([a-z]+),? *", s)
    if first and first[1] in {d.lower() for d in [*calendar.day_name, *calendar.day_abbr]}:
        s = s[first.end():]
    s = re.sub(r"\bof\b|,", " ", re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", s))
    s = re.sub(r" *([/.-]) *", r"\1", re.sub(r"\s+", " ", s.strip()))
    found = set()
    seps = [c for c in "/-. " if c in s]  # a format whose separator is missing can't match: skip it
    months = ("%b", "%B") if re.search("[a-z]", s) else ("%m",)
    for sep, month, order in itertools.product(seps, months, ("dmy", "mdy", "ymd")):
        fmt = sep.join({"d": "%d", "m": month, "y": "%Y"}[c] for c in order)
        try:
            found.add(dt.datetime.strptime(s, fmt).date())
        except ValueError:
            pass
    return found


def test_every_written_form_parses_back_to_its_target_day_first_when_both_fit(full):
    _, gen, _ = full
    for text, target, form in zip(gen.inputs, gen.targets, gen.forms):
        if form.startswith("babel:"):
            continue
        day = dt.date.fromisoformat(target)
        readings = _brute_force_readings(text)
        assert day in readings, (text, target, form)
        if len(readings) > 1:  # "02/06/1974": 2 June or February 6; the generator's rule says day-first
            swapped = dt.date(day.year, day.day, day.month) if day.day <= 12 else None
            assert readings == {day, swapped} and form.startswith("dmy_num"), (text, target, form)


CLDR = {"short": "short", "medium": "medium", "long": "long", "full": "full", "numeric": "yMd",
        "short_wd": "yMEd", "numeric_wd": "yMEd", "medium_wd": "yMMMEd", "long_wd": "full"}  # form -> CLDR format


def test_every_babel_form_is_its_locales_cldr_format_up_to_case_and_spacing(full):
    _, gen, _ = full
    checked = 0
    for text, target, form in zip(gen.inputs, gen.targets, gen.forms):
        if form.startswith("babel:"):
            _, locale, name = form.split(":")
            loc, key = Locale.parse(locale), CLDR[name]
            formats = loc.date_formats if key in ("short", "medium", "long", "full") else loc.datetime_skeletons
            pattern = formats[key].pattern
            pattern = re.sub(r"(?<!y)yy(?!y)", "yyyy", pattern)  # the generator's four-digit years
            expected = format_date(dt.date.fromisoformat(target), pattern, locale=loc)
            assert re.sub(r"\s+", "", text.lower()) == re.sub(r"\s+", "", expected.lower()), (text, expected, form)
            checked += 1
    assert checked > 0.25 * len(gen.inputs)


def test_babel_inputs_are_cldr_formats():
    cfg = DatesConfig(name="dates", num_examples=300, locales=["fr_FR"], babel_forms=["long"], babel_share=1,
                      held_out_forms=["babel:fr_FR:short"], weekday_prob=0, case_prob=0, space_prob=0)
    gen = generate(cfg)
    train = [i for i, held in enumerate(gen.held_out) if not held]
    assert {f for f, held in zip(gen.forms, gen.held_out) if held} == {"babel:fr_FR:short"}
    assert [gen.inputs[i] for i in train] == [format_date(dt.date.fromisoformat(gen.targets[i]), "long", locale="fr_FR")
                                             for i in train]
    cfg = cfg.model_copy(update={"locales": ["de_DE"], "babel_forms": ["full"], "held_out_forms": ["babel:de_DE:long"]})
    gen = generate(cfg)
    assert any("Januar" in s for s in gen.inputs) and any(s.startswith("Sonntag, ") for s in gen.inputs)
    assert all(s == format_date(dt.date.fromisoformat(t), "full" if f.endswith("full") else "long", locale="de_DE")
               for s, t, f in zip(gen.inputs, gen.targets, gen.forms))


def test_month_first_numbers_only_where_day_first_cannot_fit():
    cfg = DatesConfig(name="dates", num_examples=2000, locales=["en_US"], babel_forms=["short"], babel_share=0.5,
                      weekday_prob=0, case_prob=0, space_prob=0)
    gen = generate(cfg)
    month_first = 0
    for text, target, form in zip(gen.inputs, gen.targets, gen.forms):
        day = dt.date.fromisoformat(target)
        if form == "babel:en_US:short" or form.startswith("mdy_num"):
            assert day.day > 12 or day.day == day.month, (text, form)
            month_first += 1
        if form == "babel:en_US:short":
            assert text == f"{day.month}/{day.day}/{day.year}"  # M/d/yy written with four digits
    assert month_first > 300


def test_noise_and_locales_show_up(full):
    _, gen, bundle = full
    inputs = gen.inputs
    assert sum(s.isupper() for s in inputs) > 300 and sum(s.islower() and any(c.isalpha() for c in s) for s in inputs) > 300
    assert sum(s != s.strip() or "  " in s for s in inputs) > 200 and any(" / " in s for s in inputs)
    assert any(re.search(r"\b\d+Th\b", s) for s in inputs) is False and any(re.search(r"\d+TH\b", s) for s in inputs)
    for word in ("January", "janvier", "Januar", "enero", "gennaio", "januari", "janeiro", "Tuesday", "mardi", "Jan"):
        assert any(word.lower() in s.lower() for s in inputs), word
    assert bundle.task == "seq2seq" and bundle.num_outputs == len(bundle.meta["target_vocab"])
    assert bundle.input_shape == (bundle.meta["max_source_len"],) and bundle.meta["max_target_len"] == 11


def test_bad_config_is_one_line_naming_the_field(tmp_path):
    with pytest.raises(SpecError, match=r"data\.locales: unknown locale 'xx_YY'"):
        parse_spec({"name": "j", "model": {"name": "seq2seq"}, "data": {"name": "dates", "locales": ["en_US", "xx_YY"]}})
    with pytest.raises(SpecError, match=r"data\.babel_forms\.0: .*'short', 'medium', 'long', 'full' or 'numeric'"):
        parse_spec({"name": "j", "model": {"name": "seq2seq"}, "data": {"name": "dates", "babel_forms": ["iso"]}})
    for bad in ("ymd_num_comma", "dmy_num_space_ord", "babel:xx_YY:long", "babel:en_US:full_wd", "ydm_num_slash"):
        message = rf"^data\.held_out_forms: unknown form '{bad}'; a form is ORDER_MONTH_SEP.*dmy, mdy, ymd"
        with pytest.raises(SpecError, match=message):
            parse_spec({"name": "j", "model": {"name": "seq2seq"}, "data": {"name": "dates", "held_out_forms": [bad]}})
    job = write_job(tmp_path, "bad", model={"name": "attention_seq2seq"}, data={"name": "dates", "held_out_forms": ["iso"]})
    code, out, err = cli("train", str(job))
    assert code == 2 and err.count("\n") == 1 and "data.held_out_forms: unknown form 'iso'" in err
    assert "SEP: slash, dash, dot, space, comma" in err and "en_US, en_GB" in err
    with pytest.raises(SpecError, match=r"data\.num_examples"):
        parse_spec({"name": "j", "model": {"name": "seq2seq"}, "data": {"name": "dates", "num_examples": 10**6}})
    assert not (tmp_path / "runs").exists()


def test_seq2seq_model_on_a_classification_dataset_is_refused(tmp_path):
    job = write_job(tmp_path, "wrong", model={"name": "seq2seq"}, data={"name": "digits"})
    code, _, err = cli("train", str(job))
    assert code == 2 and "learns seq2seq tasks" in err and "multiclass" in err
