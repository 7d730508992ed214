"""Language-model data: character- and word-level token streams, batched for truncated back-propagation through time.

The corpus (``data.corpus``) is split into train / val / test by document (the Wikipedia sample's 106 articles are
shuffled by ``split_seed`` and dealt out until each held-out split has its share of the words), so no article's
text is in two splits; WikiText keeps its own split, and text8 (one document) is cut at its end as usual.

* ``wiki_chars``: each article's words joined by spaces, articles by newlines; characters seen fewer than
  ``min_count`` times in the training split become one unknown symbol.
* ``wiki_words``: words seen ``min_count`` times in the training split, the rest ``<unk>``; ``<eos>`` ends an article.

Batching is the classic ``batchify``: a split is laid out as ``streams`` rows, each a contiguous piece of the text,
and read left to right in windows of ``bptt`` tokens, so the state a model ends one window in is the right state to
start the next window of the same rows (``first`` marks the window that starts them). With several workers each
rank takes its own contiguous rows. A batch is ``(x, y, chars, first)``: inputs and next-token targets (streams, T),
the characters each target stands for (None at character level: one each; a word counts its letters and the space
or newline after it; an ``<unk>`` counts its word's letters too, though it is predicted as one token, so word-level
bits per character flatter a model by what the unknown words would cost to spell), and whether the rows start here.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from dl_ray.data import DataBundle, DataConfig
from dl_ray.data import corpus as corpora
from dl_ray.errors import SpecError
from dl_ray.registry import register_dataset

UNK_CHAR = "\ufffd"  # the replacement character: how a rare character shows in samples
UNK, EOS = "<unk>", "<eos>"
SPLITS = ("train", "val", "test")


class TextConfig(DataConfig):
    corpus: Literal["wikipedia_sample", "text8", "wikitext"] = "wikipedia_sample"
    """wikipedia_sample: gensim's 106 Wikipedia articles (offline); text8: the unzipped text8 file at ``path``;
    wikitext: the WikiText-2 or -103 folder at ``path`` (wiki.{train,valid,test}.raw; its own split)."""
    path: str | None = None
    """The text8 file or the WikiText folder (corpus text8 / wikitext only)."""
    bptt: int = Field(100, ge=2)
    """Tokens per window: how far back the gradient flows (the state itself is carried on across windows)."""
    eval_streams: int = Field(32, ge=1)
    """Parallel streams a validation / test split is read in (training uses training.batch_size streams). Each stream
    starts from a zero state, so few long streams score nearly every token with its full history."""
    limit: int | None = Field(None, gt=10)
    """Use only the first N tokens of each split (tiny smoke runs)."""


class CharTextConfig(TextConfig):
    min_count: int = Field(50, ge=1)
    """Characters seen fewer times in the training split become one unknown symbol."""


class WordTextConfig(TextConfig):
    min_count: int = Field(5, ge=1)
    """Words seen fewer times in the training split become <unk>."""


# ---------------------------------------------------------------- documents -> splits


def documents(cfg: TextConfig) -> dict[str, list[list[str]]]:
    """The corpus's documents (lists of word tokens) of each split."""
    if cfg.corpus == "wikipedia_sample":
        if cfg.path is not None:
            raise SpecError("data.path: the wikipedia_sample corpus ships with gensim; set data.path only with "
                            "data.corpus text8 or wikitext")
        return split_documents(corpora.wikipedia_sample(), cfg)
    if cfg.path is None:
        what = "the unzipped text8 file" if cfg.corpus == "text8" else "the WikiText folder (wiki.train.raw, ...)"
        raise SpecError(f"data.path: corpus {cfg.corpus} is read from a path; set data.path to {what}")
    if cfg.corpus == "wikitext":
        return corpora.read_wikitext(cfg.path)
    words = corpora.read_text8(cfg.path)
    n_val, n_test = int(len(words) * cfg.val_fraction), int(len(words) * cfg.test_fraction)
    n_train = len(words) - n_val - n_test
    return {"train": [words[:n_train]], "val": [words[n_train:n_train + n_val]], "test": [words[n_train + n_val:]]}


def split_documents(docs: list[list[str]], cfg: TextConfig) -> dict[str, list[list[str]]]:
    """Whole documents in a ``split_seed`` order: test, then validation, each until it holds its share of the
    words; the rest is training. Each split keeps at least one document."""
    if len(docs) < 3:
        raise SpecError(f"data.corpus: {cfg.corpus} has {len(docs)} documents; splitting by document needs >= 3")
    order = np.random.default_rng(cfg.split_seed).permutation(len(docs))
    total, out, i = sum(map(len, docs)), {}, 0
    for split, share, keep in (("test", cfg.test_fraction, 2), ("val", cfg.val_fraction, 1)):
        out[split], words = [], 0  # ``keep``: documents left for the splits still to fill
        while i < len(docs) - keep and (not out[split] or words < share * total):
            out[split].append(docs[order[i]])
            words, i = words + len(docs[order[i]]), i + 1
    out["train"] = [docs[j] for j in order[i:]]
    return {split: out[split] for split in SPLITS}


# ---------------------------------------------------------------- tokens


def char_vocabulary(text: str, min_count: int) -> list[str]:
    """The unknown symbol, then every character seen at least ``min_count`` times, in code-point order."""
    counts = collections.Counter(text)
    return [UNK_CHAR, *sorted(c for c, n in counts.items() if n >= min_count and c != UNK_CHAR)]


def encode_chars(text: str, vocab: list[str]) -> torch.Tensor:
    """Character ids (rare ones: 0, the unknown symbol), by one table lookup over the code points."""
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = np.zeros(max(int(points.max(initial=0)), *(ord(c) for c in vocab)) + 1, dtype=np.int64)
    table[[ord(c) for c in vocab[1:]]] = np.arange(1, len(vocab))
    return torch.from_numpy(table[points])


def char_text(docs: list[list[str]]) -> str:
    return "\n".join(" ".join(doc) for doc in docs)


def word_vocabulary(docs: list[list[str]], min_count: int) -> list[str]:
    """``<unk>``, ``<eos>``, then the words seen at least ``min_count`` times, most frequent first."""
    counts = collections.Counter(w for doc in docs for w in doc)
    words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    if len(words) < 2:
        raise SpecError(f"data.min_count: only {len(words)} distinct word(s) occur >= {min_count} times in the "
                        "training split; a language model needs at least 2: lower data.min_count")
    return [UNK, EOS, *words]


def encode_words(docs: list[list[str]], vocab: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Word ids (``<eos>`` after each document) and the characters each token stands for."""
    index = {w: i for i, w in enumerate(vocab)}
    ids, chars = [], []
    for doc in docs:
        ids += [index.get(w, 0) for w in doc] + [1]
        chars += [len(w) + 1 for w in doc] + [0]  # the separator after a word is its last character
    return torch.tensor(ids, dtype=torch.int64), torch.tensor(chars, dtype=torch.int16)


# ---------------------------------------------------------------- streams and windows


@dataclass
class TokenStream:
    """One split's tokens in reading order."""

    ids: torch.Tensor
    """(N,) int64 token ids."""
    chars: torch.Tensor | None = None
    """(N,) characters each token stands for (word level); None: one each."""

    def __len__(self) -> int:
        return len(self.ids) - 1  # the predictions it holds: every token but the first is a target

    @property
    def tensors(self) -> tuple[torch.Tensor]:
        return (self.ids,)

    def truncated(self, limit: int | None) -> "TokenStream":
        if limit is None:
            return self
        return TokenStream(self.ids[:limit], None if self.chars is None else self.chars[:limit])


class Windows:
    """``(x, y, chars, first)`` batches: rows of a split laid out as parallel streams, read in ``bptt`` windows."""

    def __init__(self, stream: TokenStream, streams: int, rows: slice, bptt: int, offset: int = 0):
        length = (len(stream.ids) - 1 - offset) // streams
        if length < 1:
            raise ValueError(f"data: a split of {len(stream.ids)} tokens is too short for {streams} streams; "
                             "lower training.batch_size or data.eval_streams")
        span = slice(offset + 1, offset + 1 + streams * length)
        self.x = stream.ids[offset: offset + streams * length].view(streams, length)[rows]
        self.y = stream.ids[span].view(streams, length)[rows]
        self.chars = None if stream.chars is None else stream.chars[span].view(streams, length)[rows]
        self.bptt = bptt

    def __len__(self) -> int:
        return -(-self.x.shape[1] // self.bptt)

    def __iter__(self):
        for start in range(0, self.x.shape[1], self.bptt):
            window = slice(start, start + self.bptt)
            chars = None if self.chars is None else self.chars[:, window].long()
            yield self.x[:, window], self.y[:, window], chars, start == 0


@dataclass
class TextBundle(DataBundle):
    """Splits are :class:`TokenStream`; batches are :class:`Windows` of parallel streams."""

    bptt: int = 100
    eval_streams: int = 32

    def loader(self, split: str, batch_size: int, *, epoch: int = 0, rank: int = 0, world: int = 1,
               seed: int | None = None, augment=None) -> Windows:
        """Training (``seed`` given): ``batch_size`` streams per worker, every worker's own rows of
        ``batch_size * world``, starting at a (seed, epoch) offset below ``bptt`` so that window boundaries move
        between epochs. Evaluation: ``eval_streams`` streams in all (rounded up to a multiple of ``world``), whatever
        ``batch_size`` the loop asks for, since a stream's length, not a batch's width, sets how much history
        each token is scored with."""
        if augment is not None and augment.enabled:
            raise ValueError("regularization.augment: text takes no augmentation; allowed: max_shift 0, max_rotation 0")
        stream: TokenStream = getattr(self, split)
        if seed is None:
            per_rank, offset = -(-self.eval_streams // world), 0
        else:
            per_rank = batch_size
            offset = int(torch.randint(self.bptt, (), generator=torch.Generator().manual_seed(seed * 100_003 + epoch)))
        return Windows(stream, per_rank * world, slice(rank * per_rank, (rank + 1) * per_rank), self.bptt, offset)

    def example_batch(self, n: int = 4):
        return next(iter(Windows(self.train, n, slice(0, n), self.bptt)))


def bundle(cfg: TextConfig, streams: dict[str, TokenStream], vocab: list[str], level: str) -> TextBundle:
    streams = {split: s.truncated(cfg.limit) for split, s in streams.items()}
    shortest = min(streams, key=lambda split: len(streams[split]))
    if len(streams[shortest]) < cfg.eval_streams:
        raise SpecError(f"data.eval_streams: the {shortest} split has {len(streams[shortest])} predictions, fewer than "
                        f"{cfg.eval_streams} streams; lower data.eval_streams or raise data.limit")
    meta = {"vocab": vocab, "level": level, "bptt": cfg.bptt,
            "tokens": {split: len(s.ids) for split, s in streams.items()}}
    return TextBundle(streams["train"], streams["val"], streams["test"], task="language_model",
                      input_shape=(cfg.bptt,), num_outputs=len(vocab), meta=meta, bptt=cfg.bptt,
                      eval_streams=cfg.eval_streams)


@register_dataset("wiki_chars", CharTextConfig)
def wiki_chars(cfg: CharTextConfig) -> TextBundle:
    """Character-level language modelling: Wikipedia sample (offline), text8 or WikiText; split by article."""
    texts = {split: char_text(docs) for split, docs in documents(cfg).items()}
    vocab = char_vocabulary(texts["train"], cfg.min_count)
    if len(vocab) < 3:
        raise SpecError(f"data.min_count: only {len(vocab) - 1} distinct character(s) occur >= {cfg.min_count} "
                        "times in the training split; a language model needs at least 2: lower data.min_count")
    return bundle(cfg, {s: TokenStream(encode_chars(t, vocab)) for s, t in texts.items()}, vocab, "char")


@register_dataset("wiki_words", WordTextConfig)
def wiki_words(cfg: WordTextConfig) -> TextBundle:
    """Word-level language modelling (<unk> below min_count, <eos> per article): Wikipedia sample, text8 or WikiText."""
    docs = documents(cfg)
    vocab = word_vocabulary(docs["train"], cfg.min_count)
    return bundle(cfg, {s: TokenStream(*encode_words(d, vocab)) for s, d in docs.items()}, vocab, "word")
