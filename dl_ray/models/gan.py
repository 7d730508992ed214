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

This file holds what every GAN shares (the game, evaluation noise, metrics of generated samples); the families:

* ``gan_mlp`` (:mod:`dl_ray.models.gan_inverse_cdf`) — the course's inverse-CDF lesson on 1-D distributions;
* ``dcgan`` (:mod:`dl_ray.models.gan_dcgan`) — a small DCGAN on images, optionally judged by a trained LeNet.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torchmetrics import Metric

from dl_ray.models.base import ModelConfig
from dl_ray.models.task import Direction, Ratio, StepContext, Task

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


__all__ = ["EVAL_SEED", "GAN", "GANConfig", "GeneratedStat", "Once", "split_seed"]
