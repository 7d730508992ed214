"""Human-written dates -> ISO ``YYYY-MM-DD``: the course's date-normalisation task, generated offline.

Every example is written in one *form*, named by a string id:

* written forms, ``ORDER_MONTH_SEP[_ord|_of][_wd|_wdabbr]``, in English: ORDER ``dmy`` (2 June 1974),
  ``mdy`` (June 2, 1974) or ``ymd`` (1974-06-02), the three orders people write; MONTH ``num`` (06),
  ``abbr`` (Jun) or ``full`` (June); SEP ``slash`` ``dash`` ``dot`` ``space`` or ``comma`` (a comma before
  the year, or after a leading year: ``June 2, 1974``, ``2 June, 1974``, ``1974, June 2``); ``_ord`` writes
  the day as an ordinal (2nd) and ``_of`` as "2nd of June"; ``_wd`` / ``_wdabbr`` put the true weekday
  (Sunday / Sun) in front. Ordinals, ``of`` and commas need a month name; ordinals a space or comma.
* Babel forms, ``babel:LOCALE:FORM``: a real CLDR format (short / medium / long / full and the numeric
  ``yMd`` skeleton) of one of several locales, ``_wd`` for its variant with the weekday.

On top of the form, noise that is not part of it: casing (lower, UPPER, Title), spacing (a doubled
space, a dropped space after punctuation, spaces around a separator, padding) and zero-padded numbers.

Whole forms are held out: ``held_out_forms`` (by default :data:`HELD_OUT`: forms no training form writes
alike, but for May, whose abbreviation is its name) appear only in the test split, so ``test/exact_match``
measures forms the model never saw; validation holds the training forms on other dates. Dates are drawn
without replacement, so no date is shared across splits.

Rules that keep the task a function of its input:

* years always have four digits: over 1900-2099 every two-digit year has two readings, and no pivot
  convention (strptime's 69, Excel's 30) is one people share;
* numbers are read day-first unless only month-first fits: month-first numeric forms (``mdy_num_*``,
  en_US ``M/d/y``) are written only for dates with day > 12 or day == month (``06/13/1974``), so
  ``02/06/1974`` is always 2 June; year-first numbers are always year-month-day (ISO's order).

Everything follows from ``split_seed``.
"""
from __future__ import annotations

import datetime as dt
import itertools
import re
from typing import Literal, NamedTuple

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator
from torch.utils.data import TensorDataset

from dl_ray.data import DataBundle, DataConfig
from dl_ray.registry import register_dataset

PAD, SOS, EOS, UNK = "<pad>", "<sos>", "<eos>", "<unk>"
FIRST, LAST = dt.date(1900, 1, 1), dt.date(2099, 12, 31)
BabelForm = Literal["short", "medium", "long", "full", "numeric"]
ENGLISH = ["en_US", "en_GB", "en_AU", "en_IN", "en_CA", "en_IE"]
OTHERS = ["fr_FR", "de_DE", "es_ES", "it_IT", "nl_NL", "pt_BR", "pt_PT"]
PLAIN = {"short": "short", "medium": "medium", "long": "long", "full": "full", "numeric": "yMd"}  # form -> CLDR pattern id
WITH_WEEKDAY = {"short": "yMEd", "numeric": "yMEd", "medium": "yMMMEd", "long": "full", "full": "full"}

ORDERS = ("dmy", "mdy", "ymd")
MONTH_STYLES = ("num", "abbr", "full")
SEPARATORS = {"slash": "/", "dash": "-", "dot": ".", "space": " ", "comma": " "}
DAY_STYLES = ("", "ord", "of")
WEEKDAY_STYLES = ("", "wd", "wdabbr")
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]  # date.weekday() order
# Held out by default: the forms a different generator found hardest (year-first slashes, abbreviated months
# between dashes, ordinals) and others no training form writes the same way (checked by a format fingerprint).
HELD_OUT = ["ymd_num_slash", "ymd_abbr_dash", "dmy_abbr_dash", "dmy_full_space_ord", "mdy_full_comma_ord",
            "mdy_num_dot", "ymd_full_space", "mdy_abbr_space_wdabbr", "dmy_abbr_comma_wd", "dmy_full_comma_of_wd"]
FORM_GRAMMAR = ("ORDER_MONTH_SEP[_ord|_of][_wd|_wdabbr] (ORDER: dmy, mdy, ymd; MONTH: num, abbr, full; "
                "SEP: slash, dash, dot, space, comma; comma, _ord and _of need abbr|full; _ord and _of need "
                "space|comma; _of needs dmy) or babel:LOCALE:short|medium|long|numeric[_wd] or babel:LOCALE:full")


class Written(NamedTuple):
    order: str
    month: str
    sep: str
    day_style: str = ""
    weekday: str = ""

    @property
    def id(self) -> str:
        return "_".join(p for p in self if p)


class Babel(NamedTuple):
    locale: str
    form: str
    weekday: bool = False

    @property
    def id(self) -> str:
        return f"babel:{self.locale}:{self.form}" + ("_wd" if self.weekday else "")


def _valid_written(form: Written) -> bool:
    named = form.month != "num"
    if form.sep == "comma" and not named:
        return False
    if form.day_style and not (named and form.sep in ("space", "comma")):
        return False
    return form.day_style != "of" or form.order == "dmy"


def written_forms() -> list[str]:
    """Every written form id, e.g. ``ymd_num_slash``, ``mdy_full_comma_ord_wd``."""
    forms = (Written(*parts) for parts in itertools.product(ORDERS, MONTH_STYLES, SEPARATORS, DAY_STYLES, WEEKDAY_STYLES))
    return [f.id for f in forms if _valid_written(f)]


def parse_form(form_id: str, locales: list[str]) -> Written | Babel | None:
    """The form an id names, or None if it names none (a babel form must use one of ``locales``)."""
    if form_id.startswith("babel:"):
        _, locale, form = (form_id.split(":") + ["", ""])[:3]
        name, weekday = (form[:-3], True) if form.endswith("_wd") else (form, False)
        ok = locale in locales and name in PLAIN and not (weekday and name == "full")
        return Babel(locale, name, weekday) if ok else None
    parts = form_id.split("_")
    if len(parts) < 3 or parts[0] not in ORDERS or parts[1] not in MONTH_STYLES or parts[2] not in SEPARATORS:
        return None
    rest = parts[3:]
    day_style = rest.pop(0) if rest and rest[0] in DAY_STYLES[1:] else ""
    weekday = rest.pop(0) if rest and rest[0] in WEEKDAY_STYLES[1:] else ""
    form = Written(parts[0], parts[1], parts[2], day_style, weekday)
    return form if not rest and _valid_written(form) else None


class DatesConfig(DataConfig):
    num_examples: int = Field(40_000, ge=100, le=(LAST - FIRST).days + 1)
    """Distinct dates drawn from 1900-01-01..2099-12-31, one written form each."""
    val_fraction: float = Field(0.05, gt=0, lt=0.5)
    """Share of all the dates kept for validation (written in training forms, like the training split)."""
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    """Share of the dates written in a held-out form: the test split (forms never seen in training)."""
    locales: list[str] = Field(default_factory=lambda: ENGLISH + OTHERS, min_length=1)
    """Babel/CLDR locales to write dates in, e.g. en_US, en_GB, fr_FR, de_DE, es_ES, it_IT, nl_NL, pt_BR."""
    babel_forms: list[BabelForm] = Field(default_factory=lambda: ["short", "medium", "long", "full", "numeric"],
                                         min_length=1)
    """CLDR formats to draw from: short | medium | long | full | numeric (the yMd skeleton)."""
    babel_share: float = Field(0.3, ge=0, le=1)
    """Share of the training dates written in a Babel form (the rest in a written English form)."""
    held_out_forms: list[str] = Field(default_factory=lambda: list(HELD_OUT), min_length=1)
    """Form ids kept out of training and validation: the test split is written only in these."""
    weekday_prob: float = Field(0.25, ge=0, le=1)
    """Chance that a training form has the (true) weekday in front."""
    ordinal_prob: float = Field(0.3, ge=0, le=1)
    """Chance that a written form with a month name and a space or comma writes the day as an ordinal."""
    case_prob: float = Field(0.2, ge=0, le=1)
    """Chance to write the whole date lower-case, upper-case or title-case."""
    space_prob: float = Field(0.1, ge=0, le=1)
    """Chance of spacing noise: a doubled space, a dropped space after punctuation, spaced separators, padding."""

    @field_validator("locales")
    @classmethod
    def _known_locales(cls, value: list[str]) -> list[str]:
        from babel import Locale, UnknownLocaleError

        for name in value:
            try:
                Locale.parse(name)
            except (UnknownLocaleError, ValueError, TypeError):
                raise ValueError(f"unknown locale {name!r}; e.g. {', '.join(ENGLISH + OTHERS)}") from None
        return value

    @field_validator("held_out_forms")
    @classmethod
    def _known_forms(cls, value: list[str], info: ValidationInfo) -> list[str]:
        locales = info.data.get("locales", [])
        for name in value:
            if parse_form(name, locales) is None:
                raise ValueError(f"unknown form {name!r}; a form is {FORM_GRAMMAR}, LOCALE one of data.locales "
                                 f"({', '.join(locales)})")
        return value


def to_iso(day: dt.date) -> str:
    return day.isoformat()


def _ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _number(n: int, rng: np.random.Generator) -> str:
    return f"{n:02d}" if rng.random() < 0.5 else str(n)


def write_form(day: dt.date, form: Written, rng: np.random.Generator) -> str:
    """``day`` in a written form; ``rng`` draws what the form leaves open (zero padding, the comma after
    the weekday)."""
    d = _ordinal(day.day) if form.day_style else _number(day.day, rng)
    m = {"num": _number(day.month, rng), "abbr": MONTHS[day.month - 1][:3], "full": MONTHS[day.month - 1]}[form.month]
    y = str(day.year)
    if form.day_style == "of":
        text = f"{d} of {m}, {y}" if form.sep == "comma" else f"{d} of {m} {y}"
    elif form.sep == "comma":
        text = {"dmy": f"{d} {m}, {y}", "mdy": f"{m} {d}, {y}", "ymd": f"{y}, {m} {d}"}[form.order]
    else:
        parts = {"dmy": (d, m, y), "mdy": (m, d, y), "ymd": (y, m, d)}[form.order]
        text = SEPARATORS[form.sep].join(parts)
    if form.weekday:
        name = WEEKDAYS[day.weekday()]
        text = (name if form.weekday == "wd" else name[:3]) + (", " if rng.random() < 0.5 else " ") + text
    return text


def _month_first(form: Written | Babel, patterns: dict) -> bool:
    """Whether ``form`` writes month and day as two numbers, month first (then ambiguous when day <= 12)."""
    if isinstance(form, Written):
        return form.order == "mdy" and form.month == "num"
    fields = re.findall(r"y+|M+|d+", re.sub(r"'[^']*'", "", patterns[form]))
    return fields[:2] in (["M", "d"], ["MM", "dd"], ["M", "dd"], ["MM", "d"])


class DateWriter:
    """Draws a form for a date (a training or a held-out one) and writes the date in it with noise."""

    def __init__(self, cfg: DatesConfig):
        from babel import Locale, dates

        self.cfg, self._dates = cfg, dates
        self.locales = {name: Locale.parse(name) for name in cfg.locales}
        self.patterns = {}
        for name, loc in self.locales.items():
            for form in PLAIN:
                self.patterns[Babel(name, form)] = self._pattern(loc, PLAIN[form])
                self.patterns[Babel(name, form, True)] = self._pattern(loc, WITH_WEEKDAY[form])
        self.held_out = [parse_form(name, cfg.locales) for name in cfg.held_out_forms]
        self.held_ids = set(cfg.held_out_forms)

    def _pattern(self, locale, key: str) -> str:
        if key in ("short", "medium", "long", "full"):
            pattern = self._dates.get_date_format(key, locale).pattern
        else:
            pattern = locale.datetime_skeletons[key].pattern
        return re.sub(r"(?<!y)yy(?!y)", "y", pattern)  # two-digit years would be ambiguous across centuries

    def fits(self, form: Written | Babel, day: dt.date) -> bool:
        return not (_month_first(form, self.patterns) and day.day <= 12 and day.day != day.month)

    def draw_training(self, day: dt.date, rng: np.random.Generator) -> Written | Babel:
        for _ in range(1000):
            form = self._draw(rng)
            if form.id not in self.held_ids and self.fits(form, day):
                return form
        raise ValueError(f"data.held_out_forms: leaves no form to train on ({', '.join(self.cfg.held_out_forms)})")

    def draw_held_out(self, day: dt.date, rng: np.random.Generator) -> Written | Babel | None:
        forms = [f for f in self.held_out if self.fits(f, day)]
        return forms[rng.integers(len(forms))] if forms else None

    def _draw(self, rng: np.random.Generator) -> Written | Babel:
        cfg = self.cfg
        if rng.random() < cfg.babel_share:
            form = cfg.babel_forms[rng.integers(len(cfg.babel_forms))]
            weekday = form != "full" and rng.random() < cfg.weekday_prob
            return Babel(cfg.locales[rng.integers(len(cfg.locales))], form, weekday)
        order, month = ORDERS[rng.integers(3)], MONTH_STYLES[rng.integers(3)]
        seps = [s for s in SEPARATORS if month != "num" or s != "comma"]
        sep = seps[rng.integers(len(seps))]
        day_style = ""
        if month != "num" and sep in ("space", "comma") and rng.random() < cfg.ordinal_prob:
            day_style = "of" if order == "dmy" and rng.random() < 0.3 else "ord"
        weekday = WEEKDAY_STYLES[1 + rng.integers(2)] if rng.random() < cfg.weekday_prob else ""
        return Written(order, month, sep, day_style, weekday)

    def write(self, day: dt.date, form: Written | Babel, rng: np.random.Generator) -> str:
        if isinstance(form, Written):
            text = write_form(day, form, rng)
        else:
            text = self._dates.format_date(day, self.patterns[form], locale=self.locales[form.locale])
        if rng.random() < self.cfg.case_prob:
            text = (str.lower, str.upper, _title)[rng.integers(3)](text)
        if rng.random() < self.cfg.space_prob:
            text = _space_noise(text, rng)
        return text


def _title(text: str) -> str:
    """Title case that leaves ordinals alone ("2nd June", where ``str.title`` writes "2Nd")."""
    return re.sub(r"\b[^\W\d_]+", lambda m: m[0].capitalize(), text)


def _space_noise(text: str, rng: np.random.Generator) -> str:
    kind = rng.integers(4)
    if kind == 0 and " " in text:  # a doubled space
        spaces = [i for i, c in enumerate(text) if c == " "]
        i = spaces[rng.integers(len(spaces))]
        return text[:i] + " " + text[i:]
    if kind == 1 and re.search(r"[,.] ", text):  # "3. Januar" -> "3.Januar"
        return re.sub(r"([,.]) ", r"\1", text, count=1)
    separator = r"(?<=\d)([/.-])(?=\w)|(?<=\w)([/.-])(?=\d)"  # between numbers, not in "segunda-feira"
    if kind == 2 and re.search(separator, text):  # "2042/11/20" -> "2042 / 11 / 20"
        return re.sub(separator, lambda m: f" {m[0]} ", text)
    left, right = (int(k) for k in rng.integers(0, 3, size=2))
    return " " * max(left, 1 - right) + text + " " * right  # padding on one side or both


class Generated(NamedTuple):
    inputs: list[str]
    targets: list[str]
    forms: list[str]
    """The form id of each input."""
    held_out: list[bool]
    """Whether each input is written in a held-out form (then it belongs to the test split)."""


def generate(cfg: DatesConfig) -> Generated:
    """``num_examples`` distinct dates in a seeded order, one form each: a held-out form with chance
    ``test_fraction`` (if one fits the date), else a training form."""
    rng = np.random.default_rng(cfg.split_seed)
    count = (LAST - FIRST).days + 1
    n = min(cfg.num_examples, cfg.limit or cfg.num_examples)
    writer = DateWriter(cfg)
    out = Generated([], [], [], [])
    for i in rng.permutation(count)[:n]:
        day = FIRST + dt.timedelta(days=int(i))
        form = writer.draw_held_out(day, rng) if rng.random() < cfg.test_fraction else None
        held = form is not None
        form = form or writer.draw_training(day, rng)
        for column, value in zip(out, (writer.write(day, form, rng), to_iso(day), form.id, held)):
            column.append(value)
    return out


def encode(texts: list[str], vocab: dict[str, int], length: int, eos: bool) -> torch.Tensor:
    """Character ids, right-padded with ``<pad>`` (0) to ``length``; ``eos`` appends ``<eos>``."""
    out = torch.zeros(len(texts), length, dtype=torch.long)
    unk = vocab.get(UNK, 0)
    for row, text in enumerate(texts):
        ids = [vocab.get(c, unk) for c in text] + ([vocab[EOS]] if eos else [])
        out[row, : len(ids)] = torch.tensor(ids[:length])
    return out


def decode(ids, vocab: list[str]) -> str:
    """Characters up to the first ``<eos>`` (specials dropped)."""
    chars = []
    for i in ids.tolist() if hasattr(ids, "tolist") else ids:
        token = vocab[i]
        if token == EOS:
            break
        if token not in (PAD, SOS, UNK):
            chars.append(token)
    return "".join(chars)


def split_indices(held_out: list[bool], val_fraction: float) -> dict[str, list[int]]:
    """Train / val / test rows: the held-out forms are the test split; the last ``val_fraction`` of all
    examples' worth of the others is validation."""
    seen = [i for i, held in enumerate(held_out) if not held]
    n_val = int(len(held_out) * val_fraction)
    return {"train": seen[: len(seen) - n_val], "val": seen[len(seen) - n_val:],
            "test": [i for i, held in enumerate(held_out) if held]}


@register_dataset("dates", DatesConfig)
def dates(cfg: DatesConfig) -> DataBundle:
    """Human-written dates (English written forms + Babel CLDR formats, noise) -> ISO YYYY-MM-DD, char-level
    seq2seq; the test split is written only in forms held out of training."""
    gen = generate(cfg)
    rows = split_indices(gen.held_out, cfg.val_fraction)
    source_vocab = [PAD, UNK, *sorted({c for i in rows["train"] for c in gen.inputs[i]})]
    target_vocab = [PAD, SOS, EOS, *sorted({c for text in gen.targets for c in text} | set("0123456789-"))]
    src_len = max(map(len, gen.inputs))
    tgt_len = max(map(len, gen.targets)) + 1  # + <eos>
    x = encode(gen.inputs, {c: i for i, c in enumerate(source_vocab)}, src_len, eos=False)
    y = encode(gen.targets, {c: i for i, c in enumerate(target_vocab)}, tgt_len, eos=True)
    train, val, test = (TensorDataset(x[rows[s]], y[rows[s]]) for s in ("train", "val", "test"))
    meta = {"source_vocab": source_vocab, "target_vocab": target_vocab, "max_source_len": src_len,
            "max_target_len": tgt_len, "texts": {"test": [gen.inputs[i] for i in rows["test"]]},
            "forms": {"test": [gen.forms[i] for i in rows["test"]]}}
    return DataBundle(train, val, test, task="seq2seq", input_shape=(src_len,), num_outputs=len(target_vocab), meta=meta)
