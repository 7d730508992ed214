"""Siamese networks (the course's face verification / one-shot section): one shared-weights CNN f, two routes.

f maps an image to an L2-normalised embedding (a LeNet-5 from :mod:`dl_ray.models.lenet` whose last layer has
``embedding_dim`` units). Both images of a pair, or the anchor, positive and negative of a triplet, go through
the same f, so the network learns a distance d(x1, x2) = ||f(x1) - f(x2)||^2 that is small for the same
person (digit, character) and large otherwise. Training (``route``):

* ``triplet``: the triplet loss with margin alpha over the triplets a miner picks in each P x K batch;
* ``pairs``: a logistic unit on |f(x1) - f(x2)| says same / different, trained on every matched pair of the
  batch and as many of the hardest unmatched ones (see :mod:`dl_ray.models.metric_losses`).

Reported (val/<name>, test/<name>), each over a whole split: ``loss`` (the training objective, over blocks of 256
examples), ``recall_at_1`` (leave-one-out nearest neighbour has the same class: recognition) and ``auc`` (ROC AUC
of same / different over every pair of the split by d: verification). ``dl-ray eval`` adds the thresholded reports
(:mod:`dl_ray.eval_siamese`).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, ValidationInfo, field_validator
from torch import nn
from torchmetrics import Metric

from dl_ray.data.augment import warp
from dl_ray.models import metric_losses as ml
from dl_ray.models.base import ModelConfig, ModelIO
from dl_ray.models.lenet import LeNet5, LeNetConfig
from dl_ray.models.task import Direction, StepContext, Task
from dl_ray.registry import register_model

LOSS_BLOCK = 256
"""Examples per block when a split's loss is computed (256^3 candidate triplets: 17 M)."""


class BackboneConfig(LeNetConfig):
    name: Literal["lenet5"] = "lenet5"
    """The CNN family of f (LeNet-5)."""
    channels: tuple[int, int] = (32, 64)
    """Feature maps of the two convolutions (wider than the paper's 6 and 16: the embedding must describe digits
    it never saw)."""
    hidden: tuple[int, int] = (256, 128)
    """Units of the two fully connected layers before the embedding layer."""


class SiameseConfig(ModelConfig):
    backbone: BackboneConfig = BackboneConfig()
    """The shared CNN f: LeNet-5's fields (channels, hidden, activation, pooling, batch_norm); its output layer
    has ``embedding_dim`` units."""
    embedding_dim: int = Field(64, ge=2)
    """Size of the embedding f(x), L2-normalised (on the unit sphere: squared distances lie in [0, 4])."""
    route: Literal["triplet", "pairs"] = "triplet"
    """triplet: the triplet loss with a miner; pairs: a logistic classifier on |f(x1) - f(x2)| with hard negatives."""
    margin: float = Field(0.2, gt=0)
    """alpha of the triplet loss: d(A, N) must exceed d(A, P) by this much before a triplet stops counting."""
    miner: ml.Miner = "semihard"
    """Which triplets of a batch train (route: triplet): all (batch-all) | hard | semihard | batch_hard."""
    view_weight: float = Field(0.0, ge=0)
    """Weight of a second loss of the same route in which every image is its own class: its randomly distorted
    copy (:func:`distort`) is its only positive, every other image a negative (0 = off). The class loss alone may keep only
    what tells the training classes apart; this keeps what tells any two digits apart (unseen classes need it)."""
    view_shift: int = Field(2, ge=0, le=8)
    """Largest translation (pixels) of the copies of ``view_weight``."""
    view_rotation: float = Field(15.0, ge=0, le=45)
    """Largest rotation (degrees) of the copies of ``view_weight``."""
    view_scale: float = Field(0.0, ge=0, le=0.5)
    """Largest relative change of size of the copies (one axis also stretched by up to two thirds of it, the other shrunk): 0 = off."""
    view_shear: float = Field(0.0, ge=0, le=1)
    """Largest horizontal shear of the copies (slant: x += shear * y): 0 = off."""
    view_elastic: float = Field(0.0, ge=0, le=0.2)
    """Standard deviation of a smooth random displacement of the copies' pixels (a 4 x 4 grid of offsets, in
    units of half the image width, interpolated): 0 = off. Handwriting varies this way; stroke shapes of a new
    digit do not come from the training classes, so the embedding must ignore it."""
    view_thickness: float = Field(0.0, ge=0, le=1)
    """Probability that a copy's strokes are thickened or thinned (half each; a 3 x 3 max or min filter blended
    half-way): 0 = off."""
    distort_inputs: bool = False
    """Also give the class loss's images the copies' distortion (on top of ``regularization.augment``)."""
    view_objective: Literal["triplet", "ntxent"] = "triplet"
    """The loss of ``view_weight``: triplet (the route's loss with each image a class of two) | ntxent (SimCLR's
    contrastive cross-entropy: each image must pick out its copy among all 2N - 1 other images of the batch at
    once, where the triplet miner trains on a few near misses; instance discrimination of this kind keeps features
    that carry over to unseen classes)."""
    temperature: float = Field(0.1, gt=0, le=1)
    """Temperature of ``view_objective: ntxent``: cosine similarities are divided by it (smaller = the closest
    negatives weigh more)."""
    projection_dim: int = Field(0, ge=0)
    """Width of SimCLR's projection head g (Linear, ReLU, Linear, then L2 normalisation) through which the view
    term sees the embedding: NT-Xent scores g(f(x)), the triplet loss and one-shot recognition use f(x) before
    it, so what the view term needs invariance to can be discarded by g instead of by f (0 = no head, the view
    term scores f(x) itself). Needs ``view_weight`` > 0 and ``view_objective: ntxent``. Off in the one-shot job:
    its view term helps unseen digits by making f itself tell any two images apart, and with a head only g has
    to (benchmarks/README.md)."""

    @field_validator("projection_dim")
    @classmethod
    def _head_needs_the_view_term(cls, dim: int, info: ValidationInfo) -> int:
        weight, objective = info.data.get("view_weight", 0), info.data.get("view_objective")
        if dim and not (weight > 0 and objective == "ntxent"):
            raise ValueError(f"the projection head serves only the NT-Xent view term: set view_weight > 0 and "
                             f"view_objective: ntxent (got {weight} and {objective}), or projection_dim: 0")
        return dim


def distort(x: torch.Tensor, cfg: SiameseConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random copies of images (N, C, H, W) as handwriting varies: shift, rotation, scale, stretch and shear in
    one affine map, then an elastic displacement and a thicker or thinner stroke (each part off at 0)."""
    n, _, h, w = x.shape
    u = (torch.rand(n, 6, generator=generator) * 2 - 1).to(x.device, x.dtype)
    angle, scale = u[:, 0] * math.radians(cfg.view_rotation), 1 + cfg.view_scale * u[:, 1]
    stretch = 1 + cfg.view_scale / 1.5 * u[:, 5]
    cos, sin, one, zero = torch.cos(angle), torch.sin(angle), torch.ones_like(angle), torch.zeros_like(angle)
    rotate = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    shear = torch.stack([torch.stack([one, cfg.view_shear * u[:, 2]], 1), torch.stack([zero, one], 1)], 1)
    zoom = torch.diag_embed(torch.stack([scale * stretch, scale / stretch], 1))
    move = torch.stack([u[:, 3] * (2 * cfg.view_shift / w), u[:, 4] * (2 * cfg.view_shift / h)], 1)
    grid = F.affine_grid(torch.cat([rotate @ shear @ zoom, move[:, :, None]], 2), list(x.shape), align_corners=False)
    if cfg.view_elastic:
        offsets = torch.randn(n, 2, 4, 4, generator=generator).to(x.device, x.dtype) * cfg.view_elastic
        grid = grid + F.interpolate(offsets, size=(h, w), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    out = warp(x, grid)
    if cfg.view_thickness:
        r = torch.rand(n, 1, 1, 1, generator=generator).to(x.device)
        thick, thin = F.max_pool2d(out, 3, 1, 1), -F.max_pool2d(-out, 3, 1, 1)
        out = torch.where(r < cfg.view_thickness / 2, (out + thick) / 2,
                          torch.where(r > 1 - cfg.view_thickness / 2, (out + thin) / 2, out))
    return out


class EmbeddingNet(nn.Module):
    """f: a LeNet-5 with ``dim`` outputs, then L2 normalisation."""

    def __init__(self, cfg: SiameseConfig, io: ModelIO, dropout: float = 0.0):
        super().__init__()
        self.cnn = LeNet5(cfg.backbone, ModelIO(io.input_shape, cfg.embedding_dim, "multiclass"), dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.cnn(x).float(), dim=1)


class SplitEmbeddings(Metric):
    """Every embedding and label of a split (gathered across workers), scored at the end by ``score``."""

    full_state_update = False

    def __init__(self, score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], **kwargs: Any):
        super().__init__(**kwargs)
        self.score = score
        self.add_state("emb", [], dist_reduce_fx="cat")
        self.add_state("labels", [], dist_reduce_fx="cat")

    def update(self, emb: torch.Tensor, labels: torch.Tensor) -> None:
        self.emb.append(emb.detach().float())
        self.labels.append(labels.detach())

    def compute(self) -> torch.Tensor:
        cat = (lambda t: torch.cat(t) if isinstance(t, list) else t)
        return torch.as_tensor(self.score(cat(self.emb), cat(self.labels)), dtype=torch.float64)


class Siamese(Task):
    kind = "metric_learning"
    reports: dict[str, Direction] = {"loss": "min", "recall_at_1": "max", "auc": "max"}

    @classmethod
    def accepts(cls, io: ModelIO) -> str | None:
        if io.task != "multiclass":
            return f"model.name=siamese learns from images with class labels; this data is {io.task!r}"
        return LeNet5.accepts(io)

    def __init__(self, cfg: SiameseConfig, io: ModelIO, dropout: float = 0.0):
        super().__init__()
        if reason := self.accepts(io):
            raise ValueError(reason)
        self.cfg = cfg
        self.embed = EmbeddingNet(cfg, io, dropout)
        self.head = nn.Linear(cfg.embedding_dim, 1) if cfg.route == "pairs" else None
        """The logistic unit sigmoid(w . |f(x1) - f(x2)| + b) of the pairs route."""
        p = cfg.projection_dim
        self.project = nn.Sequential(nn.Linear(cfg.embedding_dim, p), nn.ReLU(), nn.Linear(p, p)) if p else None
        """SimCLR's projection head g of the view term (``projection_dim``); not part of the embedding."""

    @property
    def train_reports(self) -> dict[str, Direction]:
        return {"loss": "min"}

    def networks(self) -> dict[str, nn.Module]:
        extra = {"head": self.head, "project": self.project}
        return {"embed": self.embed} | {name: net for name, net in extra.items() if net is not None}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)

    def objective(self, emb: torch.Tensor, labels: torch.Tensor, nets: dict[str, nn.Module]) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum, count) of the route's loss over one batch of embeddings."""
        ids = torch.arange(len(emb), device=emb.device)
        if self.head is None:
            dist = ml.squared_distances(emb, emb)
            return ml.triplet_terms(dist, labels, labels, ids, self.cfg.miner, self.cfg.margin)
        return ml.pair_terms(emb, emb, labels, labels, ids, nets["head"])

    def dissimilarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a_i vs b_j (rows of embeddings): the squared distance, or for the pairs route the logistic unit's
        logit of "different" (what its verification thresholds)."""
        if self.head is None:
            return ml.squared_distances(a, b)
        return torch.stack([-self.head((row[None] - b).abs()).squeeze(-1) for row in a])

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], ctx: StepContext):
        loss = self.batch_loss(*batch, ctx)
        ctx.backward(loss)
        return {"loss": loss.detach()}

    def batch_loss(self, x: torch.Tensor, labels: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """The class loss of one P x K batch, plus ``view_weight`` times the view loss."""
        if self.cfg.distort_inputs:
            x = distort(x, self.cfg)
        with ctx.autocast:
            emb = ctx.nets["embed"](x)
        total, count = self.objective(emb, labels, ctx.nets)
        loss = total / count.clamp(min=1)
        if self.cfg.view_weight:
            loss = loss + self.cfg.view_weight * self.view_loss(x, emb, ctx)
        return loss

    def view_loss(self, x: torch.Tensor, emb: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """``view_objective`` over the batch's embeddings ``emb`` and those of a distorted copy (:func:`distort`) of
        its images ``x`` (already distorted with ``distort_inputs``: the copy strays further), each image and its
        copy a class of two; both through the projection head when there is one (``projection_dim``)."""
        with ctx.autocast:
            copies = ctx.nets["embed"](distort(x, self.cfg))
        ids = torch.arange(len(x), device=x.device).repeat(2)
        both = torch.cat([emb, copies])
        if self.project is not None:
            with ctx.autocast:
                both = F.normalize(ctx.nets["project"](both).float(), dim=1)
        if self.cfg.view_objective == "ntxent":
            total, count = ml.ntxent_terms(both, ids, self.cfg.temperature)
        else:
            total, count = self.objective(both, ids, ctx.nets)
        return total / count.clamp(min=1)

    def evaluation(self) -> dict[str, Metric]:
        return {"loss": SplitEmbeddings(self.split_loss), "recall_at_1": SplitEmbeddings(self.recall_at_1),
                "auc": SplitEmbeddings(self.auc)}

    def eval_step(self, batch, metrics, nets) -> None:
        x, labels = batch
        emb = nets["embed"](x)
        for metric in metrics.values():
            metric.update(emb, labels)

    # ---- whole-split figures
    def split_loss(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The objective over blocks of LOSS_BLOCK examples in the split's order (the triplets of a whole training
        split, billions, would not fit in memory or time); sum of active losses over their count."""
        parts = [self.objective(emb[i:i + LOSS_BLOCK], labels[i:i + LOSS_BLOCK], self.networks())
                 for i in range(0, len(emb), LOSS_BLOCK)]
        return sum(p[0] for p in parts) / max(float(sum(p[1] for p in parts)), 1.0)

    def recall_at_1(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        d = self.dissimilarity(emb, emb).fill_diagonal_(float("inf"))
        return (labels[d.argmin(1)] == labels).double().mean()

    def auc(self, emb: torch.Tensor, labels: torch.Tensor) -> float:
        from sklearn.metrics import roc_auc_score

        i, j = torch.triu_indices(len(emb), len(emb), 1, device=emb.device)
        same = (labels[i] == labels[j]).cpu().numpy()
        if same.all() or not same.any():
            return float("nan")
        return roc_auc_score(same, -self.dissimilarity(emb, emb)[i, j].cpu().numpy())


@register_model("siamese", SiameseConfig, kind="metric_learning", accepts=Siamese.accepts)
def siamese(cfg: SiameseConfig, io: ModelIO, dropout: float = 0.0) -> Siamese:
    """Siamese network: a shared LeNet-5 embedding trained by the triplet loss (with a miner) or on pairs."""
    return Siamese(cfg, io, dropout)
