"""Sentiment classification, the course's two ways: average the word embeddings then softmax, or read the sentence
with a many-to-one RNN (which can let "not" overturn the words after it, where an average cannot).

Both start from an embedding matrix, learned from scratch or initialised from word vectors (``embeddings:`` a
GloVe / word2vec file or an embedding run folder, read by :func:`dl_ray.data.word_vectors.load_vectors`), then
fine-tuned or frozen. Words of the vocabulary that the vectors lack start at random (reported once, on one line).
Inputs are the padded token ids and true lengths of :mod:`dl_ray.data.reviews`; outputs are class logits.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from dl_ray.errors import SpecError
from dl_ray.models.base import ModelConfig, ModelIO, TaskModel
from dl_ray.models.rnn import Recurrent, RecurrentConfig, last_outputs
from dl_ray.registry import register_model

DEFAULT_DIM = 100


class SentimentConfig(ModelConfig):
    embedding_dim: int | None = Field(None, gt=0)
    """Width of the word embeddings; None: the loaded vectors' width, or 100 when learned from scratch."""
    embeddings: Path | None = None
    """Initial embeddings: a GloVe text file, a word2vec .bin/.txt file or an embedding run folder; None: random."""
    freeze: bool = False
    """Keep the loaded embeddings fixed (only the classifier learns); false: fine-tune them."""
    word_dropout: float = Field(0.0, ge=0, lt=1)
    """In training, drop each token of a sentence with this chance (never all of them): a regulariser for
    averaged embeddings, which otherwise memorise a few words per training sentence."""


class RnnSentimentConfig(SentimentConfig):
    rnn: RecurrentConfig = RecurrentConfig()
    """The recurrent net reading the embeddings (cell, impl, hidden_size, num_layers, bidirectional, dropout)."""


@functools.lru_cache(maxsize=4)
def initial_embeddings(path: Path, vocab: tuple[str, ...]) -> tuple[torch.Tensor, tuple[str, ...]]:
    """Rows of ``path``'s vectors for the vocabulary (row 0, padding, is zero) and the words it lacks, which get
    random rows of the vectors' own scale. Reported once per process (a local run builds the model twice)."""
    from dl_ray.data import word_vectors

    try:
        vectors = word_vectors.load_vectors(path)
    except SpecError as e:
        raise SpecError(f"model.embeddings: {str(e).removeprefix(word_vectors.FIELD + ': ')}") from None
    generator = torch.Generator().manual_seed(0)
    matrix = torch.randn(len(vocab), vectors.dim, generator=generator) * float(vectors.matrix.std())
    index = vectors.index()
    found = [(i, index[w]) for i, w in enumerate(vocab) if w in index]
    rows, sources = zip(*found) if found else ((), ())
    matrix[list(rows)] = torch.from_numpy(vectors.matrix[list(sources)])
    matrix[0] = 0.0
    missing = tuple(w for w in vocab[2:] if w not in index)  # <pad> and <unk> are ours, never in a file
    print(f"model.embeddings: {len(vocab) - 2 - len(missing):,} of {len(vocab) - 2:,} vocabulary words found in {path}; "
          f"{len(missing):,} start at random (e.g. {', '.join(missing[:8])})", file=sys.stderr)
    return matrix, missing


class SentimentModel(TaskModel):
    """Token ids (B, T) and lengths (B,) -> class logits (B, C); padding (id 0) never reaches the prediction."""

    tasks = ("multiclass",)

    def __init__(self, cfg: SentimentConfig, io: ModelIO, dropout: float = 0.0):
        super().__init__(io)
        vocab = tuple(io.meta["vocab"])
        self.missing_words: tuple[str, ...] = ()
        if cfg.embeddings is not None:
            matrix, self.missing_words = initial_embeddings(Path(cfg.embeddings), vocab)
            if cfg.embedding_dim not in (None, matrix.shape[1]):
                raise ValueError(f"model.embedding_dim: {cfg.embedding_dim} differs from the {matrix.shape[1]} "
                                 f"dimensions of {cfg.embeddings}; leave it out (or null) to take the vectors' width")
            self.embed = nn.Embedding.from_pretrained(matrix.clone(), freeze=cfg.freeze, padding_idx=0)
        else:
            self.embed = nn.Embedding(len(vocab), cfg.embedding_dim or DEFAULT_DIM, padding_idx=0)
        self.word_dropout, self.dropout = cfg.word_dropout, nn.Dropout(dropout)

    @classmethod
    def accepts(cls, io: ModelIO) -> str | None:
        if "vocab" not in io.meta or len(io.input_shape) != 1:
            return "sentiment models read token ids (B, T) with a vocabulary: data.name=rotten_tomatoes | review_stars"
        return super().accepts(io)

    def real_tokens(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T) 1.0 where a token is a sentence's own, 0.0 on padding; in training some dropped (word dropout)."""
        real = (torch.arange(tokens.shape[1], device=tokens.device) < lengths.to(tokens.device)[:, None]).float()
        if not (self.training and self.word_dropout):
            return real
        kept = real * (torch.rand(real.shape, device=real.device) >= self.word_dropout)
        first = F.one_hot(torch.zeros_like(lengths), real.shape[1]).to(real)  # a sentence all dropped keeps its first word
        return torch.where(kept.sum(1, keepdim=True) > 0, kept, first)


class AveragedEmbeddings(SentimentModel):
    """The course's classifier: the mean of a sentence's word embeddings, then a softmax layer."""

    def __init__(self, cfg: SentimentConfig, io: ModelIO, dropout: float = 0.0):
        super().__init__(cfg, io, dropout)
        self.head = nn.Linear(self.embed.embedding_dim, io.num_outputs)

    def average(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, D): the mean embedding over each sentence's real (kept) tokens; padding counts for nothing."""
        weights = self.real_tokens(tokens, lengths)
        return (self.embed(tokens) * weights[..., None]).sum(1) / weights.sum(1, keepdim=True)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.average(tokens, lengths)))


class RnnSentiment(SentimentModel):
    """Many-to-one: embeddings -> a recurrent net -> its last real step's output -> a softmax layer."""

    def __init__(self, cfg: RnnSentimentConfig, io: ModelIO, dropout: float = 0.0):
        super().__init__(cfg, io, dropout)
        self.rnn = Recurrent(self.embed.embedding_dim, cfg.rnn)
        self.head = nn.Linear(self.rnn.output_size, io.num_outputs)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # dropout on the inputs and outputs of the recurrent net only, never on its memory (the course)
        kept = self.real_tokens(tokens, lengths)[..., None]
        outputs, _ = self.rnn(self.dropout(self.embed(tokens) * kept), lengths=lengths)
        return self.head(self.dropout(last_outputs(outputs, lengths, self.rnn.cfg.bidirectional)))


@register_model("averaged_embeddings", SentimentConfig, accepts=AveragedEmbeddings.accepts)
def averaged_embeddings(cfg: SentimentConfig, io: ModelIO, dropout: float = 0.0) -> AveragedEmbeddings:
    """Average the word embeddings, then softmax (the course's sentiment classifier); token-id data."""
    return AveragedEmbeddings(cfg, io, dropout)


@register_model("rnn_sentiment", RnnSentimentConfig, accepts=RnnSentiment.accepts)
def rnn_sentiment(cfg: RnnSentimentConfig, io: ModelIO, dropout: float = 0.0) -> RnnSentiment:
    """Many-to-one GRU/LSTM over the word embeddings, then softmax; token-id data."""
    return RnnSentiment(cfg, io, dropout)
