"""Human-written dates -> ISO ``YYYY-MM-DD``: the course's date-normalisation task, generated offline.

Every input is a real CLDR format from Babel (short / medium / long / full and the numeric
``yMd`` skeleton) of one of several locales, with optional noise: the true weekday, casing
and spacing. Two rules keep the task a function of its input:

* two-digit years (``M/d/yy``) are written with four digits (1900-2099 would be ambiguous);
* month-first numeric forms (en_US ``1/3/2006``) are used only where they can't be read
  day-first (day > 12 or day == month); otherwise that example uses a spelled-out form.

Each date is rendered once, and dates are split between train/val/test, so no date (and no
date string) is shared across splits. Everything follows from ``split_seed``.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch.utils.data import TensorDataset

from dl_ray.data import DataBundle, DataConfig
from dl_ray.registry import register_dataset

PAD, SOS, EOS, UNK = "<pad>", "<sos>", "<eos>", "<unk>"
FIRST, LAST = dt.date(1900, 1, 1), dt.date(2099, 12, 31)
Form = Literal["short", "medium", "long", "full", "numeric"]
ENGLISH = ["en_US", "en_GB", "en_AU", "en_IN", "en_CA", "en_IE"]
OTHERS = ["fr_FR", "de_DE", "es_ES", "it_IT", "nl_NL", "pt_BR", "pt_PT"]
PLAIN = {"short": "short", "medium": "medium", "long": "long", "full": "full", "numeric": "yMd"}  # form -> CLDR pattern id
WITH_WEEKDAY = {"short": "yMEd", "numeric": "yMEd", "medium": "yMMMEd", "long": "full", "full": "full"}


class DatesConfig(DataConfig):
    num_examples: int = Field(40_000, ge=100, le=(LAST - FIRST).days + 1)
    """Distinct dates drawn from 1900-01-01..2099-12-31, one written form each."""
    val_fraction: float = Field(0.05, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    locales: list[str] = Field(default_factory=lambda: ENGLISH + OTHERS, min_length=1)
    """Babel/CLDR locales to write dates in, e.g. en_US, en_GB, fr_FR, de_DE, es_ES, it_IT, nl_NL, pt_BR."""
    forms: list[Form] = Field(default_factory=lambda: ["short", "medium", "long", "full", "numeric"], min_length=1)
    """CLDR formats to draw from: short | medium | long | full | numeric (the yMd skeleton)."""
    weekday_prob: float = Field(0.25, ge=0, le=1)
    """Chance to add the (true) weekday to a form that has none."""
    case_prob: float = Field(0.2, ge=0, le=1)
    """Chance to write the whole date lower-case, upper-case or title-case."""
    space_prob: float = Field(0.1, ge=0, le=1)
    """Chance of spacing noise: a doubled space, a dropped space after punctuation, padding."""

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


def to_iso(day: dt.date) -> str:
    return day.isoformat()


class DateWriter:
    """Writes one date the way a person in ``locale`` would, drawing form and noise from ``rng``."""

    def __init__(self, cfg: DatesConfig):
        from babel import Locale, dates

        self.cfg, self._dates = cfg, dates
        self.locales = [Locale.parse(name) for name in cfg.locales]
        self.patterns = {(loc.language, loc.territory, form): self._pattern(loc, form)
                         for loc in self.locales for form in {*PLAIN.values(), *WITH_WEEKDAY.values()}}

    def _pattern(self, locale, form: str) -> str:
        if form in ("short", "medium", "long", "full"):
            pattern = self._dates.get_date_format(form, locale).pattern
        else:
            pattern = locale.datetime_skeletons[form].pattern
        return re.sub(r"(?<!y)yy(?!y)", "y", pattern)  # two-digit years would be ambiguous across centuries

    def write(self, day: dt.date, rng: np.random.Generator) -> str:
        locale = self.locales[rng.integers(len(self.locales))]
        form = self.cfg.forms[rng.integers(len(self.cfg.forms))]
        key = WITH_WEEKDAY[form] if form != "full" and rng.random() < self.cfg.weekday_prob else PLAIN[form]
        pattern = self.patterns[(locale.language, locale.territory, key)]
        if _month_first_numeric(pattern) and day.day <= 12 and day.day != day.month:
            pattern = self.patterns[(locale.language, locale.territory, "long")]  # "1/3/2006" reads both ways
        text = self._dates.format_date(day, pattern, locale=locale)
        if rng.random() < self.cfg.case_prob:
            text = (str.lower, str.upper, str.title)[rng.integers(3)](text)
        if rng.random() < self.cfg.space_prob:
            text = _space_noise(text, rng)
        return text


def _month_first_numeric(pattern: str) -> bool:
    fields = re.findall(r"y+|M+|d+", re.sub(r"'[^']*'", "", pattern))
    return fields[:2] in (["M", "d"], ["MM", "dd"], ["M", "dd"], ["MM", "d"])


def _space_noise(text: str, rng: np.random.Generator) -> str:
    kind = rng.integers(3)
    if kind == 0 and " " in text:  # a doubled space
        spaces = [i for i, c in enumerate(text) if c == " "]
        i = spaces[rng.integers(len(spaces))]
        return text[:i] + " " + text[i:]
    if kind == 1 and re.search(r"[,.] ", text):  # "3. Januar" -> "3.Januar"
        return re.sub(r"([,.]) ", r"\1", text, count=1)
    return " " * int(rng.integers(1, 3)) + text + " " * int(rng.integers(0, 2))


def generate(cfg: DatesConfig) -> tuple[list[str], list[str]]:
    """``(inputs, iso_targets)``: ``num_examples`` distinct dates in a seeded order, one written form each."""
    rng = np.random.default_rng(cfg.split_seed)
    count = (LAST - FIRST).days + 1
    n = min(cfg.num_examples, cfg.limit or cfg.num_examples)
    days = [FIRST + dt.timedelta(days=int(i)) for i in rng.permutation(count)[:n]]
    writer = DateWriter(cfg)
    return [writer.write(day, rng) for day in days], [to_iso(day) for day in days]


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


@register_dataset("dates", DatesConfig)
def dates(cfg: DatesConfig) -> DataBundle:
    """Human-written dates (Babel CLDR formats, 13 locales, noise) -> ISO YYYY-MM-DD, char-level seq2seq."""
    inputs, targets = generate(cfg)
    n_val, n_test = int(len(inputs) * cfg.val_fraction), int(len(inputs) * cfg.test_fraction)
    n_train = len(inputs) - n_val - n_test
    source_vocab = [PAD, UNK, *sorted({c for text in inputs[:n_train] for c in text})]
    target_vocab = [PAD, SOS, EOS, *sorted({c for text in targets for c in text} | set("0123456789-"))]
    src_len = max(map(len, inputs))
    tgt_len = max(map(len, targets)) + 1  # + <eos>
    x = encode(inputs, {c: i for i, c in enumerate(source_vocab)}, src_len, eos=False)
    y = encode(targets, {c: i for i, c in enumerate(target_vocab)}, tgt_len, eos=True)
    cuts = [(0, n_train), (n_train, n_train + n_val), (n_train + n_val, len(inputs))]
    train, val, test = (TensorDataset(x[a:b], y[a:b]) for a, b in cuts)
    meta = {"source_vocab": source_vocab, "target_vocab": target_vocab, "max_source_len": src_len,
            "max_target_len": tgt_len, "texts": {"test": inputs[n_train + n_val:]}}
    return DataBundle(train, val, test, task="seq2seq", input_shape=(src_len,), num_outputs=len(target_vocab), meta=meta)
