"""Generative adversarial networks (Goodfellow et al. 2014): a generator G and a discriminator D in a minimax game.

The course's value function, which D maximises and G minimises::

    V(D, G) = E_x[log D(x)] + E_z[log(1 - D(G(z)))]

One training batch is one discriminator step (ascent on V: real and fake in ONE forward pass, so DDP sees D
once per backward; the fakes are drawn under ``no_grad``); every ``model.d_steps``-th batch (the course's k) is
also one generator step, with a fresh noise batch:

* ``g_loss: minimax`` — the course's objective: G minimises E_z[log(1 - D(G(z)))] (its gradient vanishes while
  D easily spots the fakes, early in training);
* ``g_loss: non_saturating`` (default) — G maximises E_z[log D(G(z))], same fixed point, strong early gradients.

Logged per epoch: ``train/d_loss`` = -V (2 log 2 = 1.386 at the equilibrium D = 1/2), ``train/g_loss`` (what G
minimises), ``train/d_real`` / ``train/d_fake`` (mean D on real and on generated samples). Both networks are
wrapped in DDP by the loop (``networks()``); each has its own optimizer (``optimizers: {generator: ...,
discriminator: ...}`` in the job) and both are checkpointed, with the D-step counter, so a resumed run continues
exactly.

Two families:

* ``gan_mlp`` — the inverse-CDF lesson on ``data.name: distribution``: G maps u ~ U(0, 1) to a sample; it learns
  (up to sorting) the target's inverse CDF. Reports the Kolmogorov-Smirnov statistic of ``eval_samples`` samples
  against the analytic CDF, and for a positive target the relative error of the sorted G(u) against the
  analytic inverse CDF on u in [0.05, 0.95]; draws ``inverse_cdf.png``. With ``average_from``, all of that is
  scored on the mean of the generator's weights from that epoch on (checkpointed with the step count).
* ``dcgan`` — a small DCGAN on images in [0, 1] (``data.pixels: unit``); draws ``samples_epoch_NNNN.png`` every
  ``sample_every`` epochs; with ``judge:`` (a trained lenet5 run) reports the judge's confidence, the share of
  the rarest digit and the Frechet distance to the real digits in LeNet's 84-d features
  (:mod:`dl_ray.models.gan_judge`), and writes ``judge.csv`` with reference rows.
"""
from __future__ import annotations

import copy
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn
from torchmetrics import Metric

from dl_ray.models.base import Activation, ModelConfig, ModelIO, activation
from dl_ray.models.task import Direction, Ratio, StepContext, Task
from dl_ray.registry import register_model

EVAL_SEED = 0
"""Base seed of every evaluation's noise: identical weights give identical figures (on every worker)."""


def split_seed(n: float, total: float) -> int:
    """The noise seed of one split's generated samples, from the split's size and the sum of its values (both
    all-reduced over workers, so every worker and any number of workers agree): validation and test score
    independent draws, so selecting the best epoch on val/<metric> leaves test/<metric> unbiased."""
    return (EVAL_SEED + int(n) * 7_919 + int(round(float(total) * 1000))) % 2**31


class GANConfig(ModelConfig):
    noise: Literal["uniform", "normal"] = "normal"
    """Distribution of the generator's input z: uniform U(0, 1) (the inverse-CDF method) or normal N(0, I)."""
    noise_dim: int = Field(64, ge=1)
    """Dimensions of z."""
    d_steps: int = Field(1, ge=1)
    """k: discriminator steps per generator step (each on its own real batch), as in the course's algorithm."""
    g_loss: Literal["minimax", "non_saturating"] = "non_saturating"
    """minimax: G minimises log(1 - D(G(z))) (the course's game); non_saturating: G maximises log D(G(z))."""
    sample_every: int = Field(0, ge=0)
    """Epochs between progress pictures (0 = only the final one, drawn on the final weights)."""


def _mlp(sizes: list[int], act: Activation, slope: float, dropout: float = 0.0) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), activation(act, slope)] + ([nn.Dropout(dropout)] if dropout else [])
    return layers


class GeneratedStat(Metric):
    """A figure of generated samples, ``value(seed)`` (computed once per evaluation and shared). The split's real
    examples only pick the seed (:func:`split_seed`; size and sum, all-reduced), so every worker agrees."""

    full_state_update = False
    higher_is_better = None

    def __init__(self, value: Callable[[int], float], **kwargs: Any):
        super().__init__(**kwargs)
        self.value = value
        self.add_state("n", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, real: torch.Tensor) -> None:
        self.n += len(real)
        self.total += real.detach().double().sum()

    def compute(self) -> torch.Tensor:
        return torch.tensor(float(self.value(split_seed(self.n, self.total))), dtype=torch.float64)


class Once:
    """A value computed on first use (one generation serves every metric of an evaluation)."""

    def __init__(self, make: Callable[[int], Any]):
        self.make, self._value, self._done = make, None, False

    def __call__(self, seed: int) -> Any:
        if not self._done:
            self._value, self._done = self.make(seed), True
        return self._value


class GAN(Task):
    """What every GAN family shares: the game, the two optimizers, evaluation noise, the k-step counter."""

    kind = "gan"
    optimizer_names = ("generator", "discriminator")
    train_reports: dict[str, Direction] = {"d_loss": "min", "g_loss": "min", "d_real": "max", "d_fake": "min"}

    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.cfg = cfg
        self.reports: dict[str, Direction] = {"loss": "min"}
        self.d_steps_taken = 0
        self._eval_noise: torch.Generator | None = None
        self.g: nn.Module
        self.d: nn.Module

    # ---- the networks
    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.g, "discriminator": self.d}

    def parameters_for(self, optimizer: str):
        return self.networks()[optimizer].parameters()

    def noise(self, n: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> torch.Tensor:
        shape = (n, self.cfg.noise_dim)
        draw = torch.rand if self.cfg.noise == "uniform" else torch.randn
        if generator is not None:
            return draw(shape, generator=generator).to(device)
        return draw(shape, device=device)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` generated samples on the CPU (the generator in eval mode; ``generator`` seeds the noise)."""
        was_training = self.training
        self.eval()
        g = self.evaluated_generator(self.g)
        device = next(g.parameters()).device
        out = torch.cat([g(self.noise(len(c), device, generator)).float().cpu()
                         for c in torch.arange(n).split(4096)])
        self.train(was_training)
        return out

    def evaluated_generator(self, g: nn.Module) -> nn.Module:
        """The generator that evaluation, samples and pictures use (``g``: the trained one)."""
        return g

    # ---- the counter of discriminator steps (checkpointed with the weights: a resumed run keeps its k-cycle)
    def get_extra_state(self) -> dict[str, int]:
        return {"d_steps_taken": self.d_steps_taken}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.d_steps_taken = int(state["d_steps_taken"])

    # ---- the game
    def g_objective(self, fake_logits: torch.Tensor) -> torch.Tensor:
        """What the generator minimises, from D's logits on its samples (log D = -softplus(-l), log(1-D) = -softplus(l))."""
        if self.cfg.g_loss == "minimax":
            return -F.softplus(fake_logits).mean()  # E log(1 - D(G(z)))
        return F.softplus(-fake_logits).mean()  # -E log D(G(z))

    @staticmethod
    def d_objective(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """-V(D, G) on one batch: -E log D(x) - E log(1 - D(G(z))), what the discriminator minimises."""
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()

    def training_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        real = batch[0]
        m = len(real)
        G, D = ctx.nets["generator"], ctx.nets["discriminator"]
        with torch.no_grad(), ctx.autocast:  # the D step's fakes: no graph into G
            fake = G(self.noise(m, real.device))
        with ctx.autocast:
            logits = D(torch.cat([real, fake.to(real.dtype)])).float().flatten()  # one D pass for real and fake
        d_loss = self.d_objective(logits[:m], logits[m:])
        ctx.backward(d_loss, "discriminator")
        self.d_steps_taken += 1
        probs = torch.sigmoid(logits.detach())
        out: dict[str, Any] = {"d_loss": d_loss.detach(), "d_real": probs[:m].mean(), "d_fake": probs[m:].mean()}
        if self.d_steps_taken % self.cfg.d_steps == 0:
            no_sync = getattr(D, "no_sync", None)  # D's weight gradients of the G step are not used: no all-reduce
            with no_sync() if no_sync else nullcontext():
                with ctx.autocast:
                    fake_logits = D(G(self.noise(m, real.device))).float().flatten()
                g_loss = self.g_objective(fake_logits)
                ctx.backward(g_loss, "generator")
            out["g_loss"] = g_loss.detach()
        return out

    # ---- evaluation: -V on the split (real examples vs as many fakes), plus the family's figures
    def evaluation(self) -> dict[str, Metric]:
        self._eval_noise = torch.Generator().manual_seed(EVAL_SEED)
        return {"loss": Ratio()}

    def eval_step(self, batch, metrics, nets) -> None:
        real = batch[0]
        fake = self.evaluated_generator(nets["generator"])(self.noise(len(real), real.device, self._eval_noise))
        logits = nets["discriminator"](torch.cat([real, fake.to(real.dtype)])).float().flatten()
        n = len(real)
        metrics["loss"].update(self.d_objective(logits[:n], logits[n:]) * n, n)
        for metric in metrics.values():
            if isinstance(metric, GeneratedStat):
                metric.update(real)

    def artifacts_due(self, epoch: int, epochs: int) -> bool:
        every = self.cfg.sample_every
        return bool(every) and epoch % every == 0 and epoch < epochs  # the last epoch is drawn by the final report


# ---------------------------------------------------------------- 1-D: the inverse-CDF lesson


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


class MLPGAN(GAN):
    """Generator and discriminator MLPs on vectors; with a 1-D target of known CDF, scored against it."""

    def __init__(self, cfg: MLPGANConfig, io: ModelIO, dropout: float = 0.0):
        if reason := self.accepts(io):
            raise ValueError(reason)
        super().__init__(cfg)
        from dl_ray.data.distributions import target_from_meta

        self.target = target_from_meta(io.meta["target"])
        dim = io.input_shape[0]
        self.g = nn.Sequential(*_mlp([cfg.noise_dim, *cfg.g_hidden], cfg.g_activation, cfg.negative_slope),
                               nn.Linear(cfg.g_hidden[-1] if cfg.g_hidden else cfg.noise_dim, dim))
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
        from dl_ray.plots import pyplot

        n = self.cfg.eval_samples
        s = self.scores()
        u, learned = self.quantiles(n)
        raw = None
        if self.cfg.noise == "uniform" and self.cfg.noise_dim == 1:
            g = self.evaluated_generator(self.g)
            device = next(g.parameters()).device
            raw = g(torch.from_numpy(u).float()[:, None].to(device)).float().cpu().flatten().numpy()
        samples = self.sample(n, torch.Generator().manual_seed(EVAL_SEED)).flatten().numpy()
        plt = pyplot()
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        lo, hi = self.cfg.icdf_range
        inner = (u >= 0.005) & (u <= 0.995)
        left.plot(u[inner], self.target.icdf(u[inner]), color="black", lw=2, label="analytic inverse CDF")
        left.plot(u[inner], learned[inner], color="tab:orange", lw=1.5, ls="--", label="learned: sorted G(u)")
        if raw is not None and not np.array_equal(np.sort(raw), raw):
            left.plot(u[inner], raw[inner], color="tab:blue", lw=0.8, alpha=0.5, label="G(u) as is")
        left.axvspan(lo, hi, color="grey", alpha=0.08, label=f"scored range u in [{lo:g}, {hi:g}]")
        err = f"max rel. error {s['icdf_error']:.1%}" if "icdf_error" in s else f"max abs. error {s['icdf_abs_error']:.3f}"
        left.set(xlabel="u", ylabel="x", title=f"inverse CDF ({err})")
        left.legend(fontsize=8)
        left.grid(alpha=0.3)
        qlo, qhi = self.target.icdf(0.001), self.target.icdf(0.999)
        bins = np.linspace(qlo, qhi, 80)
        right.hist(data.test.tensors[0].flatten().numpy(), bins=bins, density=True, alpha=0.35, color="grey",
                   label="real (test split)")
        right.hist(samples, bins=bins, density=True, histtype="step", lw=1.5, color="tab:orange",
                   label=f"generated ({n:,})")
        xs = np.linspace(qlo, qhi, 400)
        right.plot(xs, self.target.pdf(xs), color="black", lw=1.5, label="target density")
        right.set(xlabel="x", title=f"{self.target.describe()}: KS {s['ks']:.4f}")
        right.legend(fontsize=8)
        right.grid(alpha=0.3)
        fig.suptitle(f"GAN, generator fed u ~ U(0, 1) (epoch {epoch})")
        fig.tight_layout()
        path = run_dir / "inverse_cdf.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return [path]


@register_model("gan_mlp", MLPGANConfig, kind="gan", accepts=MLPGAN.accepts)
def gan_mlp(cfg: MLPGANConfig, io: ModelIO, dropout: float = 0.0) -> MLPGAN:
    """GAN of two MLPs on a 1-D distribution: the generator learns the inverse CDF (KS and inverse-CDF error)."""
    return MLPGAN(cfg, io, dropout)


# ---------------------------------------------------------------- images: DCGAN


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
    cols = ["images", "n", "fd_to_test", "confidence", "min_class_share"]
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


__all__ = ["DCGAN", "GAN", "MLPGAN"]
