"""YOLO (Redmon et al. 2016, with the anchors of YOLOv2) as the course teaches it: grid, Pc, boxes, one-hot classes.

The image goes through a small-input ResNet (the residual blocks of :mod:`dl_ray.models.resnet`) to an S x S map
(``grid``); a 1x1 convolution gives each cell, for each of its B anchors, y = [Pc, x, y, h, w, c1..cK]:

* Pc = t_c, regressed as it is (as the original YOLO does): is there an object whose centre lies in this cell,
  matched to this anchor (1) or not (0); its score is clamped to [0, 1];
* x, y = sigmoid(t_x), sigmoid(t_y): the centre's offset inside the cell, in cell units (0..1);
* h, w = t_h, t_w with box height = anchor height * exp(t_h) (width likewise): the log of the box's size
  relative to its anchor;
* c1..cK = softmax(class scores): the class probabilities, compared with the one-hot class.

The boxes follow YOLOv2 rather than the original YOLO (x, y, sqrt(w), sqrt(h) straight from a linear layer): the
sigmoid keeps a predicted centre inside the cell that predicts it (the encoding is exact and every value
reachable); exp keeps sizes positive, makes them relative to the anchor, so an anchor is a real prior, and treats
a box twice too large like one half too small (the log), which sqrt only approximates. Pc stays linear as in the
original: under a sigmoid, the squared error's gradient (p - 1) p (1 - p) vanishes at a small p, and with S*S*B
anchors almost all empty, the empty ones push every p down there first and the few objects barely pull theirs
back up. The loss is the course's, on these values: the squared error of the whole vector where an object is,
of Pc alone where none is, with YOLO's weights ``lambda_coord`` (on x, y, h, w) and ``lambda_noobj`` (on Pc of
the empty anchors), summed over the grid and averaged over the images.

Each object is assigned to the cell holding its centre and, there, to the anchor whose shape (w, h, both centred)
has the highest IoU with its box; two objects meeting in one cell and anchor keep the last one. The B anchors are
k-means centroids of the training boxes' (w, h) with 1 - IoU as the distance (YOLOv2), computed when the model is
built and kept in its state dict. Inference: score = Pc x the class's probability; boxes scoring below
``score_threshold`` are discarded, then non-max suppression per class at ``iou_threshold``
(:mod:`dl_ray.detection.boxes`). mAP@0.5 and mAP@[.5:.95] (:mod:`dl_ray.detection.average_precision`) rank the
detections down to ``eval_score_threshold`` (as COCO's evaluation does), gathered over every worker.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import nn

from dl_ray.detection.average_precision import MeanAveragePrecision
from dl_ray.detection.boxes import filter_and_nms_images
from dl_ray.models.base import ModelConfig, ModelIO
from dl_ray.models.conv_blocks import conv, conv1x1, init_conv_weights
from dl_ray.models.resnet import BasicBlock
from dl_ray.models.task import Direction, Ratio, StepContext, Task
from dl_ray.registry import register_model

PC, XY, HW, CLS = 0, slice(1, 3), slice(3, 5), slice(5, None)
"""Where Pc, (x, y), (h, w) and the classes sit in an anchor's vector."""
MAX_LOG_SIZE = 4.0
"""exp(t) is clamped here when decoding (a box 55 times its anchor): untrained weights give finite boxes."""


class YOLOConfig(ModelConfig):
    width: int = Field(16, ge=1)
    """Channels of the backbone's first stage (a small-input ResNet); each later stage doubles them."""
    blocks: tuple[PositiveInt, ...] = Field((1, 1, 2), min_length=1)
    """Basic residual blocks per stage; every stage after the first halves the map."""
    stem_stride: int = Field(2, ge=1, le=2)
    """Stride of the first 3x3 convolution (2: the blocks run on half-size maps, 4 times cheaper)."""
    grid: int = Field(12, ge=1)
    """S: the S x S cells; at most the backbone's map (canvas / (stem_stride * 2^(stages - 1))), pooled down to S."""
    anchors: int = Field(5, ge=1)
    """B: anchor boxes per cell, k-means centroids of the training boxes' (w, h) with 1 - IoU as the distance."""
    lambda_coord: float = Field(5.0, ge=0)
    """Weight of the x, y, h, w errors where an object is (YOLO: 5)."""
    lambda_noobj: float = Field(0.5, ge=0)
    """Weight of the Pc error where no object is (YOLO: 0.5): most anchors are empty."""
    score_threshold: float = Field(0.6, ge=0, le=1)
    """Inference: discard boxes whose Pc x class probability is below this (the course: 0.6)."""
    iou_threshold: float = Field(0.5, ge=0, le=1)
    """Inference: non-max suppression per class drops a box overlapping a better one by IoU above this (0.5)."""
    eval_score_threshold: float = Field(0.05, ge=0, le=1)
    """mAP (the val / test metrics): detections scoring at least this are ranked, as COCO's evaluation keeps low
    scores (a cut at ``score_threshold`` caps recall, and AP with it); ``dl-ray eval`` also gives mAP at
    ``score_threshold``."""


# ---------------------------------------------------------------- anchors


def shape_iou(wh: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """(N, A) IoU of boxes of sizes ``wh`` (N, 2) with boxes of sizes ``anchors`` (A, 2), all centred alike."""
    inter = torch.minimum(wh[:, None, 0], anchors[None, :, 0]) * torch.minimum(wh[:, None, 1], anchors[None, :, 1])
    union = wh[:, None].prod(-1) + anchors[None].prod(-1) - inter
    return inter / union.clamp(min=1e-12)


def kmeans_anchors(wh: torch.Tensor, k: int, seed: int = 0, iterations: int = 100) -> torch.Tensor:
    """``k`` anchor sizes (k, 2), by area: k-means over box sizes with d = 1 - IoU (YOLOv2), k-means++ seeding."""
    wh = wh.double()
    if len(wh) < k:
        raise ValueError(f"model.anchors: {k} anchors need at least {k} training boxes, got {len(wh)}")
    gen = torch.Generator().manual_seed(seed)
    centres = wh[torch.randint(len(wh), (1,), generator=gen)]
    while len(centres) < k:  # k-means++: the next centre far (in 1 - IoU) from those chosen
        d = (1 - shape_iou(wh, centres)).min(1).values
        centres = torch.cat([centres, wh[torch.multinomial(d.clamp(min=0) ** 2 + 1e-12, 1, generator=gen)]])
    assign = None
    for _ in range(iterations):
        new = shape_iou(wh, centres).argmax(1)
        if assign is not None and torch.equal(new, assign):
            break
        assign = new
        for j in range(k):
            if (assign == j).any():
                centres[j] = wh[assign == j].mean(0)
    return centres[centres.prod(1).argsort()].float()


# ---------------------------------------------------------------- the network


def backbone(cfg: YOLOConfig, in_channels: int) -> tuple[nn.Sequential, int]:
    """A small-input ResNet (3x3 stem, stages of basic residual blocks, no head) and its output channels."""
    layers: list[nn.Module] = [conv(in_channels, cfg.width, 3, cfg.stem_stride, bias=False), nn.BatchNorm2d(cfg.width),
                               nn.ReLU(inplace=True)]
    c_in = cfg.width
    for i, repeats in enumerate(cfg.blocks):
        width = cfg.width * 2**i
        layers += [BasicBlock(c_in if j == 0 else width, width, 2 if i and j == 0 else 1) for j in range(repeats)]
        c_in = width
    return nn.Sequential(*layers), c_in


class YOLO(Task):
    kind = "detection"
    reports: dict[str, Direction] = {"loss": "min", "map_50": "max", "map": "max"}

    @classmethod
    def accepts(cls, io: ModelIO) -> str | None:
        if io.task != "detection" or "box_wh" not in io.meta:
            return f"model.name=yolo needs detection data with boxes (data.name: digit_canvases); this data is {io.task!r}"
        return None

    def __init__(self, cfg: YOLOConfig, io: ModelIO, dropout: float = 0.0):
        super().__init__()
        if reason := self.accepts(io):
            raise ValueError(reason)
        self.cfg, self.size, self.classes = cfg, int(io.input_shape[-1]), io.num_outputs
        self.features, channels = backbone(cfg, io.input_shape[0])
        with torch.no_grad():
            side = self.features(torch.zeros(1, *io.input_shape)).shape[-1]
        if cfg.grid > side:
            raise ValueError(f"model.grid: the backbone's map of {io.input_shape[-1]} px canvases is {side}x{side}; "
                             f"allowed: 1..{side} (or fewer blocks / stem_stride 1)")
        self.pool = nn.AdaptiveAvgPool2d(cfg.grid) if cfg.grid < side else nn.Identity()
        self.neck = nn.Sequential(conv(channels, channels, 3, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                                  nn.Dropout2d(dropout))
        self.head = conv1x1(channels, cfg.anchors * (5 + self.classes))
        self.register_buffer("anchors", kmeans_anchors(io.meta["box_wh"], cfg.anchors))  # (B, 2): w, h / canvas side
        init_conv_weights(self)
        nn.init.normal_(self.head.weight, std=0.01)  # start near "nothing anywhere": Pc 0, centred boxes of anchor size
        nn.init.zeros_(self.head.bias)

    @property
    def train_reports(self) -> dict[str, Direction]:
        return {"loss": "min"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs (N, S, S, B, 5 + K): rows, columns, anchors, [t_c, t_x, t_y, t_h, t_w, class scores]."""
        out = self.head(self.neck(self.pool(self.features(x))))
        n, _, s, _ = out.shape
        return out.view(n, self.cfg.anchors, 5 + self.classes, s, s).permute(0, 3, 4, 1, 2)

    # ---- y = [Pc, x, y, h, w, c1..cK]
    @staticmethod
    def activate(raw: torch.Tensor) -> torch.Tensor:
        """The vectors y from the raw outputs: Pc as it is, sigmoid on x, y; h, w as they are (log sizes); softmax on classes."""
        return torch.cat([raw[..., :1], torch.sigmoid(raw[..., XY]), raw[..., HW], raw[..., CLS].softmax(-1)], -1)

    def encode(self, boxes: list[torch.Tensor], labels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets (N, S, S, B, 5 + K) of xyxy pixel ``boxes`` and their ``labels``, and the (N, S, S, B) object mask."""
        s, b = self.cfg.grid, self.cfg.anchors
        device = self.anchors.device
        target = torch.zeros(len(boxes), s, s, b, 5 + self.classes, device=device)
        image = torch.cat([torch.full((len(bx),), i, device=device) for i, bx in enumerate(boxes)]).long()
        xyxy = torch.cat(boxes).to(device).float() / self.size
        if len(xyxy):
            centre, wh = (xyxy[:, :2] + xyxy[:, 2:]) / 2, (xyxy[:, 2:] - xyxy[:, :2]).clamp(min=1e-6)
            cell = (centre * s).floor().clamp(0, s - 1).long()
            anchor = shape_iou(wh, self.anchors).argmax(1)
            row, col = cell[:, 1], cell[:, 0]
            y = torch.cat([torch.ones(len(xyxy), 1, device=device), centre * s - cell, (wh / self.anchors[anchor]).log().flip(1),
                           F.one_hot(torch.cat(labels).to(device), self.classes).float()], 1)
            target[image, row, col, anchor] = y
        return target, target[..., PC] > 0

    def loss(self, pred: torch.Tensor, target: torch.Tensor, obj: torch.Tensor) -> torch.Tensor:
        """The course's squared error: the whole vector where an object is, Pc alone where none is; per image."""
        err = (pred - target) ** 2
        weight = torch.ones(err.shape[-1], device=err.device)
        weight[1:5] = self.cfg.lambda_coord
        with_object = (err[obj] * weight).sum()
        without = self.cfg.lambda_noobj * err[..., PC][~obj].sum()
        return (with_object + without) / len(pred)

    def decode(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every anchor's box (N, S*S*B, 4) in xyxy pixels (clipped to the canvas), score Pc x class probability
        and class, from vectors ``y`` (predicted, or targets from :meth:`encode`)."""
        n, s, _, b, _ = y.shape
        rows, cols = torch.meshgrid(torch.arange(s, device=y.device), torch.arange(s, device=y.device), indexing="ij")
        offset = torch.stack([cols, rows], -1)[None, :, :, None].float()
        centre = (offset + y[..., XY]) / s
        wh = self.anchors * y[..., HW].flip(-1).clamp(max=MAX_LOG_SIZE).exp()
        xyxy = (torch.cat([centre - wh / 2, centre + wh / 2], -1) * self.size).clamp(0, self.size)
        probability, label = y[..., CLS].max(-1)
        return xyxy.reshape(n, -1, 4), (y[..., PC].clamp(0, 1) * probability).reshape(n, -1), label.reshape(n, -1)

    @torch.no_grad()
    def detect(self, y: torch.Tensor, score_threshold: float | None = None) -> list[dict[str, torch.Tensor]]:
        """Per image ``{"boxes", "scores", "labels"}``: scores >= ``score_threshold`` (default: the job's), then
        per-class NMS."""
        least = self.cfg.score_threshold if score_threshold is None else score_threshold
        boxes, scores, labels = self.decode(y)
        kept = filter_and_nms_images(boxes, scores, labels, least, self.cfg.iou_threshold)
        return [{"boxes": b[k], "scores": s[k], "labels": c[k]} for b, s, c, k in zip(boxes, scores, labels, kept)]

    # ---- the task interface
    def training_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        x, boxes, labels = batch
        with ctx.autocast:
            raw = ctx.nets["model"](x)
        loss = self.loss(self.activate(raw.float()), *self.encode(boxes, labels))
        ctx.backward(loss)
        n = torch.tensor(float(len(x)), device=x.device)
        return {"loss": (loss.detach() * n, n)}

    def evaluation(self) -> dict[str, Any]:
        average_precision = MeanAveragePrecision(num_classes=self.classes)
        return {"loss": Ratio(), "map_50": Entry(average_precision, "map_50"), "map": Entry(average_precision, "map")}

    def eval_step(self, batch, metrics, nets) -> None:
        x, boxes, labels = batch
        y = self.activate(self(x).float())
        n = float(len(x))
        metrics["loss"].update(self.loss(y, *self.encode(boxes, labels)) * n, n)
        found = self.detect(y, self.cfg.eval_score_threshold)
        metrics["map"].source.update(found, [{"boxes": b, "labels": c} for b, c in zip(boxes, labels)])

    @torch.no_grad()
    def artifacts(self, run_dir: Path, epoch: int, data: Any) -> list[Path]:
        from dl_ray.data.detection import draw_examples

        return [draw_examples(data.train, run_dir / "examples.png"),
                draw_detections(self, data.test, run_dir / "detections.png", title=f"epoch {epoch}")]


class Entry(nn.Module):
    """One figure of a shared :class:`MeanAveragePrecision` as a metric of its own (``map_50``, ``map``).

    The loop computes each reported metric on its own; the detections are kept (and gathered across workers) once,
    in ``source``, whose ``compute`` torchmetrics caches until the next update, so the second entry costs nothing."""

    def __init__(self, source: MeanAveragePrecision, key: str):
        super().__init__()
        self.source, self.key = source, key

    def compute(self) -> torch.Tensor:
        return self.source.compute()[self.key]


@torch.no_grad()
def draw_detections(model: YOLO, canvases: Any, path: Path, n: int = 24, title: str = "") -> Path:
    """The first ``n`` canvases with true boxes (green) and detected boxes (red), captioned "detected (true)" digits."""
    from dl_ray.data.detection import draw_boxes
    from dl_ray.plots import image_grid

    n = min(n, len(canvases))
    device = model.anchors.device
    images, boxes, labels = canvases.batch(torch.arange(n))
    found = model.detect(model.activate(model(images.to(device)).float()))

    def digits(b: torch.Tensor, c: torch.Tensor) -> str:
        return "".join(str(int(d)) for d in c[b[:, 0].argsort()].tolist()) or "-"

    sets = [[(t, (0.1, 0.9, 0.1)), (d["boxes"].cpu(), (1.0, 0.15, 0.15))] for t, d in zip(boxes, found)]
    captions = [f"{digits(d['boxes'].cpu(), d['labels'].cpu())} ({digits(t, c)})" for d, t, c in zip(found, boxes, labels)]
    return image_grid(draw_boxes(images, sets), path, nrow=8, labels=captions,
                      title=f"detected (red) and true (green) boxes; captions: detected (true) digits, left to right {title}".strip())


@register_model("yolo", YOLOConfig, kind="detection", accepts=YOLO.accepts)
def yolo(cfg: YOLOConfig, io: ModelIO, dropout: float = 0.0) -> YOLO:
    """YOLO detector: small-input ResNet backbone, S x S grid, B k-means anchors, squared-error loss, per-class NMS."""
    return YOLO(cfg, io, dropout)


__all__ = ["YOLO", "YOLOConfig", "draw_detections", "kmeans_anchors", "shape_iou"]
