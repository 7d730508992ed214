"""The course's inverse-CDF lesson as a GAN (``model.name: gan_mlp`` on ``data.name: distribution``).

G maps u ~ U(0, 1) to a sample, so it learns (up to sorting) the target's inverse CDF. Reports the
Kolmogorov-Smirnov statistic of ``eval_samples`` samples against the analytic CDF, and for a positive target the
relative error of the sorted G(u) against the analytic inverse CDF on u in [0.05, 0.95]; draws ``inverse_cdf.png``.
With ``average_from``, all of that is scored on the mean of the generator's weights from that epoch on
(checkpointed with the step count). The game itself is :mod:`dl_ray.models.gan`.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn
from torchmetrics import Metric

from dl_ray.models.base import Activation, ModelIO, activation
from dl_ray.models.gan import EVAL_SEED, GAN, GANConfig, GeneratedStat, Once
from dl_ray.models.task import StepContext
from dl_ray.registry import register_model


class MLPGANConfig(GANConfig):
    noise: Literal["uniform", "normal"] = "uniform"
    noise_dim: int = Field(1, ge=1)
    g_hidden: tuple[int, ...] = (64, 64)
    """Hidden units of the generator (an MLP from z to a sample)."""
    g_activation: Activation = "tanh"
    """Generator non-linearity (a smooth one gives a smooth inverse CDF)."""
    d_hidden: tuple[int, ...] = (64, 64)
    """Hidden units of the discriminator (an MLP from a sample to one logit)."""
    d_activation: Activation = "leaky_relu"
    """Discriminator non-linearity."""
    negative_slope: float = Field(0.2, gt=0, lt=1)
    """Slope for x < 0 of leaky_relu."""
    eval_samples: int = Field(10_000, ge=100)
    """Generated samples scored per evaluation (Kolmogorov-Smirnov against the analytic CDF, the inverse-CDF grid)."""
    icdf_range: tuple[float, float] = (0.05, 0.95)
    """u range on which the sorted G(u) is compared with the analytic inverse CDF."""
    average_from: int | None = Field(None, ge=0)
    """0-based epoch from which the generator's weights are averaged (a uniform running mean after every generator
    step) for evaluation, pictures and the final report: the game circles around its equilibrium instead of
    settling, and the mean of the circling iterates lies nearer it than any one of them. null = the last weights."""
    monotone: bool = False
    """An increasing generator by construction (positive weights exp(w); every activation is increasing): G(u) is
    then itself the learned inverse CDF, as in the course's lesson, instead of a map that becomes one after sorting.
    Its weights change by a factor per optimiser step, so it wants a larger generator learning rate than a plain MLP
    (e.g. 1e-2 for 1e-3). Needs ``noise: uniform`` with ``noise_dim: 1``."""

    @model_validator(mode="after")
    def _monotone_in_u(self):
        if self.monotone and (self.noise != "uniform" or self.noise_dim != 1):
            raise ValueError(f"monotone: true needs noise: uniform and noise_dim: 1 (got noise: {self.noise}, "
                             f"noise_dim: {self.noise_dim})")
        return self


class PositiveLinear(nn.Module):
    """``x @ exp(log_weight).T + bias``: every weight > 0, so a stack of these and increasing activations is an
    increasing function of each input. Initialised at the magnitudes of ``nn.Linear``'s weights."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        bound = 1 / math.sqrt(n_in)
        self.log_weight = nn.Parameter(torch.empty(n_out, n_in).uniform_(1e-3 * bound, bound).log())
        self.bias = nn.Parameter(torch.empty(n_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.log_weight.exp(), self.bias)


def _mlp(sizes: list[int], act: Activation, slope: float, dropout: float = 0.0,
         linear: Callable[[int, int], nn.Module] = nn.Linear) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [linear(a, b), activation(act, slope)] + ([nn.Dropout(dropout)] if dropout else [])
    return layers


class MLPGAN(GAN):
    """Generator and discriminator MLPs on vectors; with a 1-D target of known CDF, scored against it."""

    def __init__(self, cfg: MLPGANConfig, io: ModelIO, dropout: float = 0.0):
        if reason := self.accepts(io):
            raise ValueError(reason)
        super().__init__(cfg)
        from dl_ray.data.distributions import target_from_meta

        self.target = target_from_meta(io.meta["target"])
        dim = io.input_shape[0]
        linear = PositiveLinear if cfg.monotone else nn.Linear
        self.g = nn.Sequential(*_mlp([cfg.noise_dim, *cfg.g_hidden], cfg.g_activation, cfg.negative_slope, linear=linear),
                               linear(cfg.g_hidden[-1] if cfg.g_hidden else cfg.noise_dim, dim))
        self.d = nn.Sequential(*_mlp([dim, *cfg.d_hidden], cfg.d_activation, cfg.negative_slope, dropout),
                               nn.Linear(cfg.d_hidden[-1] if cfg.d_hidden else dim, 1))
        self.g_average: nn.Module | None = None  # not a network the loop trains: no optimizer, no DDP
        if cfg.average_from is not None:
            self.g_average = copy.deepcopy(self.g).requires_grad_(False)
        self.averaged_steps = 0
        self.positive = float(self.target.icdf(cfg.icdf_range[0])) > 0
        self.reports = {"loss": "min", "ks": "min"}
        if self.positive:  # relative errors need quantiles away from 0
            self.reports |= {"icdf_error": "min", "icdf_mean_error": "min"}
        else:
            self.reports |= {"icdf_abs_error": "min"}

    @staticmethod
    def accepts(io: ModelIO) -> str | None:
        if "target" not in io.meta or io.input_shape != (1,):
            return (f"model.name=gan_mlp learns a 1-D distribution of known CDF (data.name: distribution); this data "
                    f"has shape {io.input_shape} and task {io.task!r}")
        return None

    def evaluated_generator(self, g: nn.Module) -> nn.Module:
        return self.g_average if self.g_average is not None and self.averaged_steps else g

    def training_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        out = super().training_step(batch, ctx)
        if self.g_average is not None and "g_loss" in out and ctx.epoch >= self.cfg.average_from:
            self.averaged_steps += 1
            with torch.no_grad():
                for mean, now in zip(self.g_average.parameters(), self.g.parameters()):
                    mean.lerp_(now, 1.0 / self.averaged_steps)  # the first step copies
        return out

    # the number of averaged generator steps goes into checkpoints: a resumed run keeps weighting them equally
    def get_extra_state(self) -> dict[str, int]:
        extra = super().get_extra_state()
        return extra if self.g_average is None else {**extra, "averaged_steps": self.averaged_steps}

    def set_extra_state(self, state: dict[str, int]) -> None:
        super().set_extra_state(state)
        if self.g_average is not None:
            self.averaged_steps = int(state["averaged_steps"])

    @torch.no_grad()
    def scores(self, seed: int = EVAL_SEED) -> dict[str, float]:
        """KS statistic of ``eval_samples`` generated samples vs the analytic CDF; the sorted G(u) on a u grid vs the
        analytic inverse CDF (sorting makes any G monotone: it is the generated distribution's quantile function)."""
        from scipy import stats

        n = self.cfg.eval_samples
        samples = self.sample(n, torch.Generator().manual_seed(seed)).flatten().double().numpy()
        out = {"ks": float(stats.kstest(samples, self.target.cdf).statistic)}
        u, learned = self.quantiles(n)
        lo, hi = self.cfg.icdf_range
        keep = (u >= lo) & (u <= hi)
        exact = self.target.icdf(u[keep])
        err = np.abs(learned[keep] - exact)
        out["icdf_abs_error"] = float(err.max())  # in the data's units
        if self.positive:
            out["icdf_error"] = float((err / exact).max())
            out["icdf_mean_error"] = float((err / exact).mean())
        return out

    @torch.no_grad()
    def quantiles(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(u grid (i + 1/2) / n, sorted G(u)): the learned inverse CDF made monotone (1-D uniform noise; other
        noise: the sorted outputs of quantile-spaced draws of z, i.e. the generated distribution's quantiles)."""
        u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        if self.cfg.noise == "uniform" and self.cfg.noise_dim == 1:
            z = u.float()[:, None]
        else:
            z = self.noise(n, "cpu", torch.Generator().manual_seed(EVAL_SEED + 1))
        was_training = self.training
        self.eval()
        g = self.evaluated_generator(self.g)
        device = next(g.parameters()).device
        out = g(z.to(device)).float().cpu().flatten().double().numpy()
        self.train(was_training)
        return u.numpy(), np.sort(out)

    def evaluation(self) -> dict[str, Metric]:
        metrics = super().evaluation()
        scores = Once(self.scores)
        for name in self.reports:
            if name != "loss":
                metrics[name] = GeneratedStat(lambda seed, name=name: scores(seed)[name])
        return metrics

    @torch.no_grad()
    def artifacts(self, run_dir: Path, epoch: int, data: Any) -> list[Path]:
        """inverse_cdf.png: the learned inverse CDF against the analytic one, and the samples' histogram."""
        from dl_ray.plots import pyplot

        scores = self.scores()
        plt = pyplot()
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        self._draw_inverse_cdf(left, scores)
        self._draw_histogram(right, scores, data.test.tensors[0].flatten().numpy())
        fig.suptitle(f"GAN, generator fed u ~ U(0, 1) (epoch {epoch})")
        fig.tight_layout()
        path = run_dir / "inverse_cdf.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return [path]

    def _draw_inverse_cdf(self, ax, scores: dict[str, float]) -> None:
        """The analytic inverse CDF, the sorted G(u) and, where sorting changed it, G(u) as it is."""
        u, learned = self.quantiles(self.cfg.eval_samples)
        raw = None
        if self.cfg.noise == "uniform" and self.cfg.noise_dim == 1:
            g = self.evaluated_generator(self.g)
            device = next(g.parameters()).device
            raw = g(torch.from_numpy(u).float()[:, None].to(device)).float().cpu().flatten().numpy()
        lo, hi = self.cfg.icdf_range
        inner = (u >= 0.005) & (u <= 0.995)
        ax.plot(u[inner], self.target.icdf(u[inner]), color="black", lw=2, label="analytic inverse CDF")
        ax.plot(u[inner], learned[inner], color="tab:orange", lw=1.5, ls="--", label="learned: sorted G(u)")
        if raw is not None and not np.array_equal(np.sort(raw), raw):
            ax.plot(u[inner], raw[inner], color="tab:blue", lw=0.8, alpha=0.5, label="G(u) as is")
        ax.axvspan(lo, hi, color="grey", alpha=0.08, label=f"scored range u in [{lo:g}, {hi:g}]")
        err = (f"max rel. error {scores['icdf_error']:.1%}" if "icdf_error" in scores
               else f"max abs. error {scores['icdf_abs_error']:.3f}")
        ax.set(xlabel="u", ylabel="x", title=f"inverse CDF ({err})")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)

    def _draw_histogram(self, ax, scores: dict[str, float], real: np.ndarray) -> None:
        """Histograms of the real test split and of generated samples, over the target's density."""
        n = self.cfg.eval_samples
        samples = self.sample(n, torch.Generator().manual_seed(EVAL_SEED)).flatten().numpy()
        qlo, qhi = self.target.icdf(0.001), self.target.icdf(0.999)
        bins = np.linspace(qlo, qhi, 80)
        ax.hist(real, bins=bins, density=True, alpha=0.35, color="grey", label="real (test split)")
        ax.hist(samples, bins=bins, density=True, histtype="step", lw=1.5, color="tab:orange", label=f"generated ({n:,})")
        xs = np.linspace(qlo, qhi, 400)
        ax.plot(xs, self.target.pdf(xs), color="black", lw=1.5, label="target density")
        ax.set(xlabel="x", title=f"{self.target.describe()}: KS {scores['ks']:.4f}")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)


@register_model("gan_mlp", MLPGANConfig, kind="gan", accepts=MLPGAN.accepts)
def gan_mlp(cfg: MLPGANConfig, io: ModelIO, dropout: float = 0.0) -> MLPGAN:
    """GAN of two MLPs on a 1-D distribution: the generator learns the inverse CDF (KS and inverse-CDF error)."""
    return MLPGAN(cfg, io, dropout)


__all__ = ["MLPGAN", "MLPGANConfig"]
