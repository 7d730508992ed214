"""Training examples for word2vec and GloVe, made anew every epoch from one tokenised corpus.

Every epoch (seeded by ``(seed, epoch)``, identically on every worker, so a resumed run replays it):

1. **Frequent-word subsampling** (Mikolov et al. 2013): a token of a word with corpus share ``z = count / total``
   is kept with probability ``(sqrt(z / t) + 1) * t / z`` (capped at 1), where ``t`` is ``sample``: the formula of
   the C tool and gensim (the paper's ``1 - sqrt(t / z)`` discard rate, smoothed). Discarded tokens leave the
   text, so the windows below reach past them.
2. **Dynamic window:** each centre draws b uniformly from 1..window and pairs with the words at most b away
   (in the same article), so near words count more, as the C tool does.
3. Each surviving centre word becomes one example, its window: the centre and its up to 2 * window context
   words. Skip-gram makes a (context word -> centre word) pair of each, as the C tool does; CBOW predicts the
   centre from their mean. Examples are shuffled and dealt out ``rank::world``; each worker builds the
   context rows of its own shard only.
4. The noise distribution of negative sampling, P(w) = count(w)^0.75 / sum_v count(v)^0.75 (the "empirical
   formula" between unigram and uniform sampling), is :func:`noise_distribution`; the model draws from it.
"""
from __future__ import annotations

import functools
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Iterator, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch.utils.data import TensorDataset

from dl_ray.data import DataBundle, DataConfig
from dl_ray.data.reviews import RottenTomatoesConfig
from dl_ray.errors import SpecError
from dl_ray.registry import register_dataset

NOISE_POWER = 0.75
Objective = Literal["skipgram", "cbow", "glove"]


@dataclass(frozen=True)
class Vocab:
    words: list[str]
    """Most frequent first (ties by first appearance), so a Huffman tree and a noise table share the order."""
    counts: np.ndarray
    """(V,) int64 corpus counts."""

    @functools.cached_property
    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)


def build_vocab(corpus: Iterable[list[str]], min_count: int, max_size: int | None = None) -> Vocab:
    """Words seen at least ``min_count`` times (at most ``max_size`` of the most frequent); fewer than 2 is a SpecError."""
    counts = Counter(w for doc in corpus for w in doc)
    kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: -counts[w])[:max_size]
    if len(kept) < 2:
        raise SpecError(f"data.min_count: {min_count} leaves {len(kept)} word(s) of {len(counts)} in the vocabulary; "
                        "word vectors need at least 2: lower data.min_count or give a larger corpus")
    return Vocab(kept, np.array([counts[w] for w in kept], dtype=np.int64))


def encode(corpus: Iterable[list[str]], vocab: Vocab) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (int64) of the in-vocabulary words, and the article each belongs to (words out of the
    vocabulary are dropped before windowing, as in the C tool)."""
    index = vocab.index
    ids, docs = [], []
    for d, doc in enumerate(corpus):
        row = [index[w] for w in doc if w in index]
        ids.append(np.asarray(row, dtype=np.int64))
        docs.append(np.full(len(row), d, dtype=np.int64))
    return np.concatenate(ids), np.concatenate(docs)


def keep_probability(counts: np.ndarray, sample: float) -> np.ndarray:
    """Per word, the probability that one of its tokens survives subsampling (1 everywhere when sample is 0)."""
    if sample <= 0:
        return np.ones(len(counts))
    z = counts / counts.sum()
    return np.minimum((np.sqrt(z / sample) + 1) * sample / z, 1.0)


def noise_distribution(counts: np.ndarray, power: float = NOISE_POWER) -> np.ndarray:
    """P(w) proportional to count(w)^power: the distribution negative samples are drawn from."""
    weights = counts.astype(np.float64) ** power
    return weights / weights.sum()


def subsample(ids: np.ndarray, docs: np.ndarray, keep: np.ndarray, rng: np.random.Generator):
    """The tokens that survive this epoch's subsampling (and their articles)."""
    mask = rng.random(len(ids)) < keep[ids]
    return ids[mask], docs[mask]


def windows(ids: np.ndarray, docs: np.ndarray, window: int, rng: np.random.Generator):
    """(contexts (N, 2 * window) with -1 where a window is shorter, centres (N,)): each centre with the words
    within its dynamic window (drawn from ``rng``) in its article; centres without any are dropped."""
    reach = rng.integers(1, window + 1, len(ids))
    centres = np.flatnonzero(has_neighbour(docs))
    return window_rows(ids, docs, reach, centres, window), ids[centres]


def has_neighbour(docs: np.ndarray) -> np.ndarray:
    """Per token, whether a word next to it is in its article: every window reaches at least 1 word either side,
    so these are the centres with a context."""
    same = docs[1:] == docs[:-1]
    out = np.zeros(len(docs), dtype=bool)
    out[1:] |= same
    out[:-1] |= same
    return out


def window_rows(ids: np.ndarray, docs: np.ndarray, reach: np.ndarray, centres: np.ndarray, window: int) -> np.ndarray:
    """(len(centres), 2 * window) ids of the words within ``reach`` of each centre position in its article, -1
    elsewhere. Built for the given centres only, so each worker makes the rows of its own shard."""
    pad = np.full(window, -1, dtype=np.int64)
    padded_ids, padded_docs = np.concatenate([pad, ids, pad]), np.concatenate([pad, docs, pad])  # doc -1: no article
    own_doc, own_reach = docs[centres], reach[centres]
    rows = np.empty((len(centres), 2 * window), dtype=np.int64)
    for k, offset in enumerate([o for d in range(1, window + 1) for o in (-d, d)]):
        source = centres + (window + offset)
        ok = (own_reach >= abs(offset)) & (padded_docs[source] == own_doc)
        rows[:, k] = np.where(ok, padded_ids[source], -1)
    return rows


# ---------------------------------------------------------------- GloVe's co-occurrence counts


def cooccurrence(ids: np.ndarray, docs: np.ndarray, vocab_size: int, window: int):
    """(rows, cols, X) of the symmetric co-occurrence counts: a pair of words d apart in one article (d <= window)
    adds 1/d to X[i, j] and to X[j, i], as GloVe counts them."""
    rows, cols, weights = [], [], []
    for d in range(1, window + 1):
        same = docs[:-d] == docs[d:]
        left, right = ids[:-d][same], ids[d:][same]
        rows += [left, right]
        cols += [right, left]
        weights.append(np.full(2 * len(left), 1.0 / d))
    keys = np.concatenate(rows) * vocab_size + np.concatenate(cols)
    unique, inverse = np.unique(keys, return_inverse=True)
    counts = np.bincount(inverse, weights=np.concatenate(weights))
    return unique // vocab_size, unique % vocab_size, counts


# ---------------------------------------------------------------- the dataset


class WordCorpusConfig(DataConfig):
    corpus: Literal["wikipedia_sample"] = "wikipedia_sample"
    """The tokenised text: gensim's Wikipedia sample (106 articles, 453 k words, shipped with gensim)."""
    examples: Literal["windows", "cooccurrence"] = "windows"
    """windows: each epoch's subsampled centre words with their dynamic-window context (word2vec: skip-gram
    and CBOW); cooccurrence: the 1/distance-weighted co-occurrence counts, shuffled each epoch (GloVe)."""
    min_count: int = Field(5, ge=1)
    """Words seen fewer times in the training articles are dropped from the text before windowing."""
    max_vocab: int | None = Field(None, ge=2)
    """Keep at most this many of the most frequent words (None: every word with min_count)."""
    window: int = Field(5, ge=1, le=20)
    """Largest distance between a centre and a context word (word2vec draws 1..window per centre; GloVe counts
    every distance up to it, weighted 1/d)."""
    sample: float = Field(1e-3, ge=0, lt=1)
    """Subsampling threshold t of frequent words (0: keep every token); windows only."""
    eval_examples: int = Field(20_000, ge=100)
    """At most this many examples (windows or co-occurring pairs) of the held-out articles score val and test loss."""
    val_fraction: float = Field(0.05, gt=0, lt=0.5)
    """Share of the articles held out for the validation loss (at least one article)."""
    test_fraction: float = Field(0.05, gt=0, lt=0.5)
    """Share of the articles held out for the test loss (at least one article)."""
    limit: int | None = Field(None, gt=2)
    """Use only this many articles (after shuffling): smoke runs."""
    reviews: RottenTomatoesConfig | None = None
    """Also learn from the training sentences of this Rotten Tomatoes split (a sentiment job's ``data:`` section,
    e.g. ``{name: rotten_tomatoes}``), each sentence a document of the training text: in-domain vectors to start a
    sentiment model from. Only its train split is read, so that job's val and test sentences stay unseen."""

    @field_validator("reviews")
    @classmethod
    def _rotten_tomatoes_only(cls, value: RottenTomatoesConfig | None) -> RottenTomatoesConfig | None:
        if value is not None and value.name != "rotten_tomatoes":
            raise ValueError(f"reviews.name must be rotten_tomatoes (the review corpus shipped offline), got {value.name}")
        return value


def corpus_tokens(name: str) -> list[list[str]]:
    from dl_ray.data.corpus import wikipedia_sample

    return wikipedia_sample()


def split_articles(corpus: list[list[str]], cfg: WordCorpusConfig) -> dict[str, list[list[str]]]:
    """Whole articles shuffled by split_seed into train, val and test (held-out text scores the loss)."""
    order = np.random.default_rng(cfg.split_seed).permutation(len(corpus))[: cfg.limit]
    n_val, n_test = (max(1, int(len(order) * f)) for f in (cfg.val_fraction, cfg.test_fraction))
    if len(order) - n_val - n_test < 1:
        raise SpecError(f"data.limit: {len(order)} articles leave none to train on after {n_val} val and {n_test} test")
    cuts = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
    return {split: [corpus[i] for i in index] for split, index in cuts.items()}


class WordCorpusBundle(DataBundle):
    """The encoded articles of each split; its loader makes each epoch's examples (see the module docstring).

    Batches: windows -> ``(contexts (B, 2 * window) with -1 padding, centres (B,))``; cooccurrence ->
    ``(rows (B,), cols (B,), counts (B,))``. The split datasets hold the articles' token ids (one padded row per
    article), so the loop's "samples" are articles."""

    def __init__(self, cfg: WordCorpusConfig, vocab: Vocab, articles: dict[str, list[list[str]]]):
        encoded = {split: encode(docs, vocab) for split, docs in articles.items()}
        width = max(len(doc) for docs in articles.values() for doc in docs)
        rows = {split: TensorDataset(_padded_articles(ids, docs, len(articles[split]), width))
                for split, (ids, docs) in encoded.items()}
        meta = {"words": vocab.words, "counts": vocab.counts.tolist(), "window": cfg.window}
        super().__init__(rows["train"], rows["val"], rows["test"], task=cfg.examples, input_shape=(width,),
                         num_outputs=len(vocab), meta=meta)
        self.cfg, self.vocab, self.articles, self.encoded = cfg, vocab, articles, encoded
        self.keep = keep_probability(vocab.counts, cfg.sample)
        self.counts = ({split: cooccurrence(ids, docs, len(vocab), cfg.window) for split, (ids, docs) in encoded.items()}
                       if cfg.examples == "cooccurrence" else None)
        self._lock, self._made = threading.Lock(), (None, ())

    def examples(self, split: str, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """One epoch's examples of a split, shuffled: GloVe's ``(rows, cols, counts)``; for windows, the
        subsampled ``(ids, docs, reach, centre positions)``, whose context rows :meth:`select` makes per shard."""
        if self.counts is not None:
            order = rng.permutation(len(self.counts[split][0]))
            return tuple(a[order] for a in self.counts[split])
        ids, docs = subsample(*self.encoded[split], self.keep, rng)
        reach = rng.integers(1, self.cfg.window + 1, len(ids))
        centres = np.flatnonzero(has_neighbour(docs))
        return ids, docs, reach, centres[rng.permutation(len(centres))]

    def select(self, made: tuple[np.ndarray, ...], index: slice) -> tuple[np.ndarray, ...]:
        """Examples ``index`` of an epoch's ``made``: windows -> (contexts, centres), cooccurrence -> (rows, cols, counts)."""
        if self.counts is not None:
            return tuple(a[index] for a in made)
        ids, docs, reach, centres = made
        mine = centres[index]
        return window_rows(ids, docs, reach, mine, self.cfg.window), ids[mine]

    def epoch_examples(self, seed: int, epoch: int) -> tuple[np.ndarray, ...]:
        """The training ``examples`` of (seed, epoch), made once when several workers of one process ask for shards."""
        with self._lock:
            if self._made[0] != (seed, epoch):
                self._made = ((seed, epoch), self.examples("train", np.random.default_rng([seed, epoch])))
            return self._made[1]

    def example_batch(self, n: int = 4) -> tuple[torch.Tensor, ...]:
        return next(iter(self.loader("val", n)))

    def loader(self, split: str, batch_size: int, *, epoch: int = 0, rank: int = 0, world: int = 1,
               seed: int | None = None, augment=None) -> "ExampleBatches":
        """Training (``seed`` given): epoch ``epoch``'s examples, drawn from (seed, epoch) alike on every worker,
        dealt out ``rank::world``. Evaluation: a fixed sample of the split's examples, every world-th."""
        if seed is not None:
            made = self.epoch_examples(seed, epoch)
            end = len(made[-1]) // world * world  # every worker takes the same number of steps
        else:
            made = self.examples(split, np.random.default_rng([self.cfg.split_seed, {"train": 0, "val": 1, "test": 2}[split]]))
            end = min(len(made[-1]), self.cfg.eval_examples)
        arrays = self.select(made, slice(rank, end, world))
        return ExampleBatches(tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays), batch_size)


def _padded_articles(ids: np.ndarray, docs: np.ndarray, count: int, width: int) -> torch.Tensor:
    """(articles, width) int32 token ids, -1 after each article's end."""
    out = np.full((count, width), -1, dtype=np.int32)
    starts = np.searchsorted(docs, np.arange(count))
    position = np.arange(len(ids)) - starts[docs]
    out[docs, position] = ids
    return torch.from_numpy(out)


class ExampleBatches:
    def __init__(self, tensors: tuple[torch.Tensor, ...], batch_size: int):
        self.tensors, self.batch_size = tensors, batch_size

    def __len__(self) -> int:
        return -(-len(self.tensors[0]) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for start in range(0, len(self.tensors[0]), self.batch_size):
            yield tuple(t[start:start + self.batch_size] for t in self.tensors)


def training_reviews(cfg: RottenTomatoesConfig) -> list[list[str]]:
    """The tokens of each training sentence of a sentiment job's Rotten Tomatoes split (labels unused)."""
    from dl_ray.data.reviews import rotten_tomatoes, split_examples

    return [tokens for tokens, _ in split_examples(rotten_tomatoes(), cfg)["train"]]


@register_dataset("word_corpus", WordCorpusConfig)
def word_corpus(cfg: WordCorpusConfig) -> WordCorpusBundle:
    """Real text for word vectors: windows per epoch (word2vec) or co-occurrence counts (GloVe), split by article."""
    articles = split_articles(corpus_tokens(cfg.corpus), cfg)
    if cfg.reviews is not None:
        articles["train"] = articles["train"] + training_reviews(cfg.reviews)
    return WordCorpusBundle(cfg, build_vocab(articles["train"], cfg.min_count, cfg.max_vocab), articles)
