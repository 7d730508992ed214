"""GloVe (Pennington et al. 2014): global co-occurrence counts fitted by weighted least squares.

The course's GloVe joins global matrix factorisation and local context windows: X_ij counts how often word j
appears within ``window`` words of word i (a pair d apart adds 1/d), and the vectors minimise

    J = sum_{X_ij > 0} f(X_ij) (w_i . w~_j + b_i + b~_j - log X_ij)^2,   f(x) = min((x / x_max)^alpha, 1)

so rare pairs count less and frequent ones are capped. Each word ends with w_i + w~_i (both tables see the same
symmetric counts; their sum is the paper's choice). Batches are shuffled non-zero entries; the gradient is written
in closed form for the batch's rows (sparse, as word2vec's), so the optimizer steps only those rows: SparseAdam
(``optimizer: {name: adam}``: per-row step sizes, like the paper's AdaGrad) learns far more than plain SGD here.
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch import nn
from torchmetrics import Metric

from dl_ray.data.word_vectors import WordVectors
from dl_ray.models.base import ModelIO
from dl_ray.models.task import StepContext
from dl_ray.models.word2vec import EmbeddingConfig, WordVectorTask, read_analogy_file, with_row_gradients
from dl_ray.registry import register_model


class GloVeConfig(EmbeddingConfig):
    dim: int = Field(100, ge=2)
    """Length of the word vectors."""
    x_max: float = Field(10.0, gt=0)
    """Counts at or above x_max get the full weight 1 (the paper uses 100 on billions of words; GloVe's own demo
    uses 10 on text8-sized corpora like this one)."""
    alpha: float = Field(0.75, gt=0)
    """Exponent of the weighting f(x) = (x / x_max)^alpha below x_max."""


def weighting(x: torch.Tensor, x_max: float, alpha: float) -> torch.Tensor:
    """f(x) = (x / x_max)^alpha, capped at 1."""
    return (x / x_max).pow(alpha).clamp(max=1.0)


def glove_loss(w: torch.Tensor, w_ctx: torch.Tensor, b: torch.Tensor, b_ctx: torch.Tensor, x: torch.Tensor,
               x_max: float, alpha: float):
    """The summed weighted squared error of a batch of entries (rows w_i, w~_j (B, D), biases (B,), counts (B,))
    and its gradients with respect to w_i, w~_j and each bias."""
    diff = (w * w_ctx).sum(1) + b + b_ctx - torch.log(x)
    fx = weighting(x, x_max, alpha)
    g = 2 * fx * diff
    return (fx * diff * diff).sum(), g[:, None] * w_ctx, g[:, None] * w, g


class GloVe(WordVectorTask):

    @classmethod
    def accepts(cls, io: ModelIO) -> str | None:
        if io.task != "cooccurrence":
            return (f"model.name=glove fits co-occurrence counts: use data: {{name: word_corpus, examples: cooccurrence}}; "
                    f"got examples: {io.task}")
        return None

    def __init__(self, cfg: GloVeConfig, io: ModelIO):
        super().__init__()
        self.cfg, self.words = cfg, list(io.meta["words"])
        self.analogies = read_analogy_file(cfg.analogies)
        v, d = len(self.words), cfg.dim
        self.word = nn.Embedding(v, d, sparse=True)
        self.context = nn.Embedding(v, d, sparse=True)
        self.bias = nn.Embedding(v, 1, sparse=True)
        self.context_bias = nn.Embedding(v, 1, sparse=True)
        with torch.no_grad():  # GloVe's start: uniform in +-0.5/d, biases too
            for table in (self.word, self.context, self.bias, self.context_bias):
                table.weight.uniform_(-0.5 / d, 0.5 / d)

    def objective(self, batch):
        rows, cols, x = batch
        with torch.no_grad():
            loss, g_w, g_ctx, g_b = glove_loss(self.word.weight[rows], self.context.weight[cols],
                                               self.bias.weight[rows, 0], self.context_bias.weight[cols, 0],
                                               x.to(self.word.weight.dtype), self.cfg.x_max, self.cfg.alpha)
        return loss, rows, cols, g_w, g_ctx, g_b

    def training_step(self, batch, ctx: StepContext):
        loss, rows, cols, g_w, g_ctx, g_b = self.objective(batch)
        ctx.backward(with_row_gradients(loss, [(self.word.weight, rows, g_w), (self.context.weight, cols, g_ctx),
                                               (self.bias.weight, rows, g_b[:, None]),
                                               (self.context_bias.weight, cols, g_b[:, None])]))
        return {"loss": (loss, float(len(rows)))}

    def eval_step(self, batch, metrics: dict[str, Metric], nets: dict[str, nn.Module]) -> None:
        loss, rows, *_ = self.objective(batch)
        for name, metric in metrics.items():
            metric.update(loss, len(rows)) if name == "loss" else metric.update()

    def vectors(self) -> WordVectors:
        """w + w~ per word."""
        return WordVectors(self.words, (self.word.weight + self.context.weight).detach().float().cpu().numpy())


@register_model("glove", GloVeConfig, kind="embedding", accepts=GloVe.accepts)
def glove(cfg: GloVeConfig, io: ModelIO, dropout: float = 0.0) -> GloVe:
    """GloVe: weighted least squares on 1/distance co-occurrence counts (sparse row steps)."""
    reason = GloVe.accepts(io)
    if reason:
        raise ValueError(reason)
    return GloVe(cfg, io)
