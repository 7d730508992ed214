"""A small DCGAN (``model.name: dcgan``) on images in [0, 1] (``data.pixels: unit``).

Draws ``samples_epoch_NNNN.png`` every ``sample_every`` epochs; with ``judge:`` (a trained lenet5 run) reports the
judge's confidence, the share of the rarest digit and the Frechet distance to the real digits in LeNet's 84-d
features (:mod:`dl_ray.models.gan_judge`), and writes ``judge.csv`` with reference rows. The game itself is
:mod:`dl_ray.models.gan`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import Field, field_validator
from torch import nn
from torchmetrics import Metric

from dl_ray.models.base import ModelIO
from dl_ray.models.gan import EVAL_SEED, GAN, GANConfig, GeneratedStat, Once, split_seed
from dl_ray.registry import register_model


class DCGANConfig(GANConfig):
    g_channels: tuple[int, int] = (64, 32)
    """Generator feature maps at H/4 and H/2 (a linear layer from z, then two stride-2 transposed convolutions)."""
    d_channels: tuple[int, int] = (32, 64)
    """Discriminator feature maps of its two stride-2 convolutions (then one linear layer to the logit)."""
    sample_every: int = Field(5, ge=0)
    judge: Path | None = None
    """A trained lenet5 run folder (e.g. runs/mnist_lenet) that scores generated digits every epoch: confidence,
    class coverage and the Frechet distance in its 84-d features; null = no judge."""
    judge_samples: int = Field(1000, ge=100)
    """Generated digits the judge scores per evaluation."""
    reference_vae: Path | None = None
    """A trained VAE run folder whose prior samples join the final judge table (judge.csv) as a reference."""

    @field_validator("judge", "reference_vae")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        return path.absolute() if path is not None else None  # Ray workers run elsewhere: resolved on the driver


class DCGAN(GAN):
    """A small DCGAN (Radford et al. 2016): transposed convolutions with batch norm up, strided convolutions down."""

    def __init__(self, cfg: DCGANConfig, io: ModelIO, dropout: float = 0.0):
        if reason := self.accepts(io):
            raise ValueError(reason)
        super().__init__(cfg)
        c, h, w = io.input_shape
        g1, g2 = cfg.g_channels
        d1, d2 = cfg.d_channels
        self.shape = (c, h, w)
        self.g = nn.Sequential(
            nn.Linear(cfg.noise_dim, g1 * (h // 4) * (w // 4)), nn.BatchNorm1d(g1 * (h // 4) * (w // 4)), nn.ReLU(),
            nn.Unflatten(1, (g1, h // 4, w // 4)),
            nn.ConvTranspose2d(g1, g2, 4, stride=2, padding=1), nn.BatchNorm2d(g2), nn.ReLU(),
            nn.ConvTranspose2d(g2, c, 4, stride=2, padding=1), nn.Sigmoid(),
        )
        drop = [nn.Dropout(dropout)] if dropout else []
        self.d = nn.Sequential(
            nn.Conv2d(c, d1, 4, stride=2, padding=1), nn.LeakyReLU(0.2), *drop,
            nn.Conv2d(d1, d2, 4, stride=2, padding=1), nn.LeakyReLU(0.2), *drop,
            nn.Flatten(), nn.Linear(d2 * (h // 4) * (w // 4), 1),
        )
        for m in self.modules():  # DCGAN initialisation
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)
        self.judge = None
        if cfg.judge is not None:
            from dl_ray.models.gan_judge import Judge

            if problem := Judge.problem(cfg.judge):
                raise ValueError(problem)
            self.judge = Judge(cfg.judge)
            self.reports = {"loss": "min", "fd": "min", "judge_confidence": "max", "judge_min_class": "max"}
        self._references: dict[str, torch.Tensor] | None = None

    @staticmethod
    def accepts(io: ModelIO) -> str | None:
        shape = io.input_shape
        if len(shape) != 3 or shape[1] % 4 or shape[2] % 4 or io.meta.get("pixels") != "unit":
            return (f"model.name=dcgan generates images with pixels in [0, 1] and H, W divisible by 4 (e.g. data: "
                    f"{{name: mnist5k, pixels: unit}}); this data has shape {shape}, pixels {io.meta.get('pixels')!r}")
        return None

    def judged_samples(self, seed: int = EVAL_SEED):
        """The judge's verdict on ``judge_samples`` generated digits (noise seeded by ``seed``)."""
        images = self.sample(self.cfg.judge_samples, torch.Generator().manual_seed(seed))
        return self.judge.verdict(images.to(next(self.g.parameters()).device))

    def evaluation(self) -> dict[str, Metric]:
        metrics = super().evaluation()
        if self.judge is not None:
            from dl_ray.models.gan_judge import FrechetToReal

            verdict = Once(self.judged_samples)
            metrics["fd"] = FrechetToReal(lambda seed: verdict(seed).gaussian, self.judge.model.classifier[-1].in_features,
                                          seed=split_seed)
            metrics["judge_confidence"] = GeneratedStat(lambda seed: verdict(seed).confidence)
            metrics["judge_min_class"] = GeneratedStat(lambda seed: verdict(seed).min_share)
        return metrics

    def eval_step(self, batch, metrics, nets) -> None:
        super().eval_step(batch, metrics, nets)
        if self.judge is not None:
            metrics["fd"].update(self.judge(batch[0])[0], batch[0])

    @torch.no_grad()
    def artifacts(self, run_dir: Path, epoch: int, data: Any) -> list[Path]:
        from dl_ray.plots import image_grid

        images = self.sample(100, torch.Generator().manual_seed(EVAL_SEED + 1))
        labels, title = None, f"DCGAN samples, epoch {epoch} (the same z every time)"
        paths = []
        if self.judge is not None:
            _, probs = self.judge(images)
            top, pred = probs.max(dim=1)
            labels = [f"{int(p)} {float(t):.2f}" for p, t in zip(pred, top)]
            title += ": LeNet's digit and probability"
            paths_table = self.write_judge_table(run_dir, epoch, data)
        paths.append(image_grid(images, run_dir / f"samples_epoch_{epoch:04d}.png", title=title, labels=labels))
        if self.judge is not None:
            paths.append(paths_table)
        return paths

    def write_judge_table(self, run_dir: Path, epoch: int, data: Any) -> Path:
        """judge.csv: the GAN's samples, a VAE's samples (``reference_vae``) and real training digits, each
        ``judge_samples`` images, against the real test digits (Frechet distance, confidence, coverage); also as PNG."""
        from dl_ray.models import gan_judge

        n = self.cfg.judge_samples
        if self._references is None:  # fixed: computed once per process
            self._references = {}
            vae = gan_judge.vae_samples(self.cfg.reference_vae, n)
            if vae is not None:
                self._references[f"VAE samples ({Path(self.cfg.reference_vae).name})"] = vae
            self._references["real training digits"] = data.train.tensors[0][:n]
        entries = {f"GAN samples (epoch {epoch})": self.sample(n, torch.Generator().manual_seed(EVAL_SEED))}
        rows = gan_judge.judge_table(self.judge, data.test.tensors[0], entries | self._references)
        gan_judge.write_table(rows, run_dir / "judge.csv")
        return table_png(rows, run_dir / "judge.png", f"LeNet judge vs {len(data.test)} real test digits")


def table_png(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    from dl_ray.plots import pyplot

    plt = pyplot()
    cells = [[r["images"], r["n"], f"{r['fd_to_test']:.3f}", f"{r['confidence']:.4f}", f"{r['min_class_share']:.3f}"]
             for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.5 + 0.4 * (len(rows) + 1)))
    ax.axis("off")
    ax.table(cellText=cells, colLabels=["images", "n", "Frechet distance to test", "mean top prob.", "rarest digit share"],
             loc="center").scale(1, 1.3)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@register_model("dcgan", DCGANConfig, kind="gan", accepts=DCGAN.accepts)
def dcgan(cfg: DCGANConfig, io: ModelIO, dropout: float = 0.0) -> DCGAN:
    """DCGAN on images in [0, 1] (MNIST-5k, pixels: unit); optional LeNet judge: confidence, coverage, Frechet distance."""
    return DCGAN(cfg, io, dropout)


__all__ = ["DCGAN", "DCGANConfig"]
