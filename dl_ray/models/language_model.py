"""Recurrent language models (the course: "given words as input, a probability distribution over the words that
could come next"): embedding -> :class:`~dl_ray.models.rnn.Recurrent` -> linear -> softmax over the vocabulary.

Trained by truncated back-propagation through time on the token streams of :mod:`dl_ray.data.text`: the state a
window ends in starts the next window of the same streams, detached, so the gradient flows back ``bptt`` steps
while the memory reaches across the whole stream. The state is reset where the data says its streams start
(each epoch, each evaluated split). Metrics stream over a split and all-reduce across workers: the mean
negative log-likelihood per token (``loss``, nats), ``perplexity`` = exp(loss), and ``bpc``, bits per character
= total NLL / ln 2 / characters (at word level each word counts its letters and the separator after it).
Each epoch the model writes samples at a few temperatures (softmax(logits / T): T < 1 sharper, T > 1 flatter).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from dl_ray.models.base import ModelConfig, ModelIO
from dl_ray.models.rnn import Recurrent, RecurrentConfig
from dl_ray.models.task import Ratio, StepContext, Task
from dl_ray.registry import register_model

SAMPLE_SEED = 0  # every epoch's samples draw the same random numbers, so they show what training changed


class LanguageModelConfig(ModelConfig):
    embedding_dim: int = Field(64, gt=0)
    """Size of each token's learned vector (the input of the recurrent net)."""
    rnn: RecurrentConfig = RecurrentConfig()
    """The recurrent net: cell, impl (ours | torch), hidden_size, num_layers, dropout between layers."""
    tie_weights: bool = False
    """Use the embedding matrix as the output layer's weights (Press & Wolf 2017; Inan et al. 2017): fewer
    parameters and often lower perplexity; needs embedding_dim == rnn.hidden_size."""
    temperatures: list[float] = Field(default_factory=lambda: [0.5, 1.0], min_length=1)
    """Softmax temperatures of the samples written each epoch (samples.txt in the run folder)."""
    sample_length: int = Field(300, ge=1)
    """Tokens per sample (characters or words)."""
    sample_every: int = Field(1, ge=1)
    """Write samples every N epochs (and always at the end, with the best weights)."""

    @field_validator("rnn")
    @classmethod
    def _forward_only(cls, rnn: RecurrentConfig) -> RecurrentConfig:
        if rnn.bidirectional:
            raise ValueError("a language model predicts the next token from the past only; allowed: bidirectional false")
        return rnn

    @field_validator("temperatures")
    @classmethod
    def _positive(cls, temperatures: list[float]) -> list[float]:
        if min(temperatures) <= 0:
            raise ValueError(f"every temperature must be > 0, got {temperatures}")
        return temperatures


class Perplexity(Ratio):
    """exp(mean NLL per token): the number of equally likely tokens the model is as unsure as."""

    def compute(self) -> torch.Tensor:
        return super().compute().exp()


class BitsPerCharacter(Ratio):
    """Total NLL in bits over the characters the tokens stand for: update with (NLL in nats, characters)."""

    def compute(self) -> torch.Tensor:
        return super().compute() / math.log(2)


def detach(state):
    """The carried state, cut from the graph of the window that produced it (truncated BPTT)."""
    if state is None or isinstance(state, torch.Tensor):
        return None if state is None else state.detach()
    return tuple(s.detach() for s in state)


class LanguageModel(Task):
    kind = "language_model"
    reports = {"loss": "min", "perplexity": "min", "bpc": "min"}

    @classmethod
    def accepts(cls, io: ModelIO) -> str | None:
        if io.task != "language_model" or "vocab" not in io.meta:
            return f"a language model learns from token streams (data wiki_chars / wiki_words); this data is {io.task!r}"
        return None

    def __init__(self, cfg: LanguageModelConfig, io: ModelIO, dropout: float = 0.0):
        super().__init__()
        if reason := self.accepts(io):
            raise ValueError(reason)
        self.cfg, self.vocab, self.level = cfg, list(io.meta["vocab"]), io.meta.get("level", "char")
        self.embed = nn.Embedding(io.num_outputs, cfg.embedding_dim)
        self.rnn = Recurrent(cfg.embedding_dim, cfg.rnn)
        self.head = nn.Linear(self.rnn.output_size, io.num_outputs)
        self.drop = nn.Dropout(dropout)  # on the embeddings and the outputs: the non-recurrent connections only
        if cfg.tie_weights:
            if cfg.embedding_dim != self.rnn.output_size:
                raise ValueError(f"model.tie_weights: needs model.embedding_dim ({cfg.embedding_dim}) == "
                                 f"model.rnn.hidden_size ({self.rnn.output_size}); make them equal or set tie_weights: false")
            self.head.weight = self.embed.weight
        self._train_state = self._eval_state = None

    @property
    def train_reports(self):
        return {"loss": "min", "bpc": "min"}  # perplexity is no (total, count) ratio: it is exp of one

    def forward(self, x: torch.Tensor, state=None):
        """x (B, T) token ids -> (logits (B, T, V), final state)."""
        out, state = self.rnn(self.drop(self.embed(x)), state)
        return self.head(self.drop(out)), state

    def nll(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum")

    @staticmethod
    def characters(y: torch.Tensor, chars: torch.Tensor | None) -> torch.Tensor:
        return torch.tensor(float(y.numel()), device=y.device) if chars is None else chars.sum().float()

    def training_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        x, y, chars, first = batch
        state = None if first else self._train_state
        with ctx.autocast:
            logits, state = ctx.nets["model"](x, state)
        nll = self.nll(logits, y)
        ctx.backward(nll / y.numel())
        self._train_state = detach(state)
        nll = nll.detach()
        return {"loss": (nll, torch.tensor(float(y.numel()))), "bpc": (nll / math.log(2), self.characters(y, chars))}

    def evaluation(self):
        self._eval_state = None
        return {"loss": Ratio(), "perplexity": Perplexity(), "bpc": BitsPerCharacter()}

    def eval_step(self, batch, metrics, nets) -> None:
        x, y, chars, first = batch
        logits, self._eval_state = self(x, None if first else self._eval_state)
        nll, n = self.nll(logits, y), float(y.numel())
        metrics["loss"].update(nll, n)
        metrics["perplexity"].update(nll, n)
        metrics["bpc"].update(nll, self.characters(y, chars))

    # ---- samples
    @torch.no_grad()
    def sample(self, length: int, temperature: float, generator: torch.Generator) -> str:
        """``length`` tokens drawn one at a time from softmax(logits / temperature), starting as an article starts."""
        device = self.head.weight.device
        token = torch.tensor([[self.vocab.index("\n" if self.level == "char" else "<eos>")]], device=device)
        state, drawn = None, []
        for _ in range(length):
            logits, state = self(token, state)
            probs = F.softmax(logits[0, -1].float() / temperature, dim=-1).cpu()
            token = torch.multinomial(probs, 1, generator=generator).to(device)[None]
            drawn.append(self.vocab[int(token)])
        if self.level == "char":
            return "".join(drawn)
        return " ".join(drawn).replace(" <eos> ", "\n").replace("<eos>", "\n")

    def artifacts_due(self, epoch: int, epochs: int) -> bool:
        return epoch % self.cfg.sample_every == 0

    def artifacts(self, run_dir: Path, epoch: int, data: Any) -> list[Path]:
        """Samples at each temperature, printed and appended to ``samples.txt`` (text: nothing for W&B's images)."""
        generator = torch.Generator().manual_seed(SAMPLE_SEED)
        lines = [f"== epoch {epoch}"]
        for t in self.cfg.temperatures:
            lines += [f"-- temperature {t:g}", self.sample(self.cfg.sample_length, t, generator)]
        text = "\n".join(lines) + "\n"
        print(text, flush=True)
        with open(run_dir / "samples.txt", "a", encoding="utf-8") as f:
            f.write(text)
        return []


@register_model("rnn_lm", LanguageModelConfig, kind="language_model", accepts=LanguageModel.accepts)
def rnn_lm(cfg: LanguageModelConfig, io: ModelIO, dropout: float = 0.0) -> LanguageModel:
    """Recurrent language model (char or word): embedding -> RNN/GRU/LSTM -> softmax; truncated BPTT, samples."""
    return LanguageModel(cfg, io, dropout)
