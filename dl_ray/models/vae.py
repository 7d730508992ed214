"""Variational autoencoder (Kingma & Welling 2014) on binarised images: a Bernoulli decoder and a Gaussian posterior.

The encoder maps an image x to q(z|x) = N(mu, diag(sigma^2)) (it outputs mu and log sigma^2); a latent is drawn
with the reparameterisation z = mu + sigma * eps, eps ~ N(0, I), so gradients flow to mu and log sigma^2; the
decoder maps z to the logits of 784 independent Bernoulli pixels. Per image, in nats:

* ``recon`` = -E_q[log p(x|z)], the binary cross-entropy summed over pixels (one z per image when training;
  ``model.eval_samples`` of them, averaged, on validation / test);
* ``kl`` = KL(q(z|x) || N(0, I)) = 1/2 sum_j (mu_j^2 + sigma_j^2 - log sigma_j^2 - 1), in closed form;
* ``neg_elbo`` = recon + kl, the negative evidence lower bound (an upper bound of -log p(x)): the test figure;
* ``loss`` = recon + beta * kl, what is minimised (beta = ``model.beta``, ramped up from 0 over
  ``model.warmup_epochs`` epochs in training: KL warm-up).

Only binary pixels (``data.pixels: binary``) have a Bernoulli likelihood: other data is refused. With
``regularization.augment`` the shifted / rotated training images are thresholded at 0.5 again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from dl_ray.models.base import Activation, ModelConfig, ModelIO, activation
from dl_ray.models.task import Direction, StepContext, Task
from dl_ray.registry import register_model

EVAL_SEED = 0
"""Seed of the posterior noise of every evaluation pass: a split's figures do not move between identical weights."""


class VAEConfig(ModelConfig):
    latent: int = Field(20, ge=1)
    """Dimensions of z (2 draws the latent manifold)."""
    architecture: Literal["mlp", "conv"] = "mlp"
    """mlp: fully connected encoder and decoder (``hidden``); conv: strided convolutions (``channels``) then ``hidden``."""
    hidden: tuple[int, ...] = (400,)
    """Fully connected layers of the encoder (the decoder mirrors them); mlp: from the pixels, conv: after the convolutions."""
    channels: tuple[int, ...] = (32, 64)
    """conv: feature maps of the stride-2 4x4 convolutions of the encoder (28 -> 14 -> 7); the decoder mirrors them."""
    activation: Activation = "relu"
    """Non-linearity of every hidden layer."""
    beta: float = Field(1.0, ge=0)
    """Weight of the KL term in the training loss (1 = the ELBO; the reported neg_elbo always uses 1)."""
    warmup_epochs: int = Field(0, ge=0)
    """KL warm-up: beta grows linearly from 0 (first epoch) to ``beta`` over this many epochs; 0 = off."""
    eval_samples: int = Field(1, ge=1)
    """Posterior samples per image when evaluating (the ELBO estimate's variance shrinks, its mean does not move)."""

    @model_validator(mode="after")
    def _conv_needs_channels(self):
        if self.architecture == "conv" and not self.channels:
            raise ValueError("architecture: conv needs at least one convolution in channels")
        return self


def _mlp(sizes: list[int], act: Activation, dropout: float) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), activation(act)] + ([nn.Dropout(dropout)] if dropout else [])
    return layers


class VAE(Task):
    kind = "vae"
    reports: dict[str, Direction] = {"loss": "min", "neg_elbo": "min", "recon": "min", "kl": "min"}

    @classmethod
    def accepts(cls, io: ModelIO) -> str | None:
        if len(io.input_shape) != 3:
            return f"model.name=vae needs image data (C,H,W); this data has shape {io.input_shape}"
        pixels = io.meta.get("pixels", "standardized")
        if pixels != "binary":
            return (f"model.name=vae needs binary pixels for its Bernoulli decoder (data.pixels: binary, "
                    f"which data.name: mnist5k offers); this data has {pixels} pixels")
        return None

    def __init__(self, cfg: VAEConfig, io: ModelIO, dropout: float = 0.0):
        super().__init__()
        if reason := self.accepts(io):
            raise ValueError(reason)
        self.cfg, self.shape = cfg, tuple(io.input_shape)
        c, h, w = self.shape
        hidden = list(cfg.hidden)
        if cfg.architecture == "mlp":
            self.encoder = nn.Sequential(nn.Flatten(), *_mlp([c * h * w, *hidden], cfg.activation, dropout))
            self.decoder = nn.Sequential(*_mlp([cfg.latent, *reversed(hidden)], cfg.activation, dropout),
                                         nn.Linear(hidden[0] if hidden else cfg.latent, c * h * w),
                                         nn.Unflatten(1, self.shape))
            features = hidden[-1] if hidden else c * h * w
        else:
            if h % 2 ** len(cfg.channels) or w % 2 ** len(cfg.channels):
                raise ValueError(f"model.channels: {len(cfg.channels)} stride-2 convolutions need H and W divisible by "
                                 f"{2 ** len(cfg.channels)}; the images are {h}x{w}")
            chans = [c, *cfg.channels]
            convs: list[nn.Module] = []
            for a, b in zip(chans, chans[1:]):
                convs += [nn.Conv2d(a, b, 4, stride=2, padding=1), activation(cfg.activation)]
            fh, fw = h // 2 ** len(cfg.channels), w // 2 ** len(cfg.channels)
            flat = chans[-1] * fh * fw
            self.encoder = nn.Sequential(*convs, nn.Flatten(), *_mlp([flat, *hidden], cfg.activation, dropout))
            deconvs: list[nn.Module] = []
            for a, b in zip(chans[:0:-1], chans[-2::-1]):
                deconvs += [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1), activation(cfg.activation)]
            deconvs.pop()  # the last layer gives logits
            self.decoder = nn.Sequential(*_mlp([cfg.latent, *reversed(hidden), flat], cfg.activation, dropout),
                                         nn.Unflatten(1, (chans[-1], fh, fw)), *deconvs)
            features = hidden[-1] if hidden else flat
        self.to_mu = nn.Linear(features, cfg.latent)
        self.to_logvar = nn.Linear(features, cfg.latent)
        self._eval_noise: torch.Generator | None = None

    # ---- the model
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log sigma^2) of q(z|x), each (N, latent)."""
        h = self.encoder(x)
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits of every pixel, (N, C, H, W)."""
        return self.decoder(z)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """z = mu + sigma * eps, eps ~ N(0, I): a sample of N(mu, sigma^2) that is differentiable in mu and log sigma^2."""
        eps = torch.randn_like(mu) if eps is None else eps
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits of x given one posterior sample, mu, log sigma^2): one pass, as DDP sees it."""
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar

    @staticmethod
    def kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(mu, sigma^2) || N(0, I)) per row, in nats (closed form)."""
        return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=1)

    @staticmethod
    def recon(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) per image under independent Bernoulli pixels, in nats."""
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(dim=1)

    def beta_at(self, epoch: int) -> float:
        """The KL weight while training ``epoch`` (0-based): KL warm-up ramps it from 0 to ``beta``."""
        if not self.cfg.warmup_epochs:
            return self.cfg.beta
        return self.cfg.beta * min(1.0, epoch / self.cfg.warmup_epochs)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images from the prior, z ~ N(0, I): Bernoulli means (pixel probabilities) in [0, 1], (n, C, H, W)."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        z = torch.randn(n, self.cfg.latent, generator=generator).to(device)
        out = torch.sigmoid(self.decode(z))
        self.train(was_training)
        return out

    # ---- the task interface
    @property
    def train_reports(self) -> dict[str, Direction]:
        return self.reports | {"beta": "min"}

    def training_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        x = batch[0]
        if ((x != 0) & (x != 1)).any():  # regularization.augment interpolated the pixels: binary again
            x = (x > 0.5).to(x.dtype)
        with ctx.autocast:
            logits, mu, logvar = ctx.nets["model"](x)
        recon, kl = self.recon(logits.float(), x), self.kl(mu.float(), logvar.float())
        beta = self.beta_at(ctx.epoch)
        loss = (recon + beta * kl).mean()
        ctx.backward(loss, "main")
        n = torch.tensor(float(len(x)), device=x.device)
        recon, kl = recon.detach().sum(), kl.detach().sum()
        return {"loss": (loss.detach() * n, n), "neg_elbo": (recon + kl, n), "recon": (recon, n), "kl": (kl, n),
                "beta": torch.tensor(beta)}

    def evaluation(self):
        self._eval_noise = torch.Generator().manual_seed(EVAL_SEED)
        return super().evaluation()

    def terms(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(recon, kl) per image, recon averaged over the posterior samples ``eps`` (K, N, latent)."""
        mu, logvar = self.encode(x)
        if eps is None:
            eps = torch.randn(self.cfg.eval_samples, *mu.shape, generator=self._eval_noise).to(mu)
        recon = torch.stack([self.recon(self.decode(self.reparameterize(mu, logvar, e)), x) for e in eps]).mean(0)
        return recon, self.kl(mu, logvar)

    def eval_step(self, batch, metrics, nets) -> None:
        x = batch[0]
        recon, kl = self.terms(x)
        n = float(len(x))
        metrics["recon"].update(recon.sum(), n)
        metrics["kl"].update(kl.sum(), n)
        metrics["neg_elbo"].update((recon + kl).sum(), n)
        metrics["loss"].update((recon + self.cfg.beta * kl).sum(), n)

    # ---- pictures: prior samples, reconstructions, interpolation, the 2-D latent manifold
    @torch.no_grad()
    def artifacts(self, run_dir: Path, epoch: int, data: Any) -> list[Path]:
        from dl_ray.plots import image_grid

        device = next(self.parameters()).device
        x, y = (t[:200] for t in data.test.tensors[:2])
        x = x.to(device)
        paths = [image_grid(self.sample(100, torch.Generator().manual_seed(0)), run_dir / "samples.png", 10,
                      title=f"VAE samples from the prior N(0, I), z in R^{self.cfg.latent} (epoch {epoch})")]
        mu, _ = self.encode(x[:50])
        recon = torch.sigmoid(self.decode(mu)).cpu()
        rows = torch.cat([torch.cat([a, b]) for a, b in zip(x[:50].cpu().split(10), recon.split(10))])
        paths.append(image_grid(rows, run_dir / "reconstructions.png", 10,
                          title="test digits (odd rows) and their reconstructions from mu (even rows)"))
        pairs = _distinct_pairs(y, 6)
        if pairs:
            mu, _ = self.encode(x[torch.tensor([i for p in pairs for i in p])])
            t = torch.linspace(0, 1, 10, device=device)[:, None]
            line = torch.cat([mu[2 * k] * (1 - t) + mu[2 * k + 1] * t for k in range(len(pairs))])
            paths.append(image_grid(torch.sigmoid(self.decode(line)), run_dir / "interpolation.png", 10,
                              title="decoded along the line between the mu's of two test digits"))
        if self.cfg.latent == 2:
            paths.append(self.latent_grid(run_dir / "latent_grid.png", epoch))
        return paths

    @torch.no_grad()
    def latent_grid(self, path: Path, epoch: int, steps: int = 20) -> Path:
        """The decoded 2-D latent space on a grid of Gaussian quantiles (5 % to 95 %), z1 rightwards, z2 upwards."""
        from dl_ray.plots import image_grid

        device = next(self.parameters()).device
        q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, steps))
        zy, zx = torch.meshgrid(q.flip(0), q, indexing="ij")
        z = torch.stack([zx.flatten(), zy.flatten()], 1).to(device)
        ticks = [0, steps // 4, steps // 2, 3 * steps // 4, steps - 1]
        return image_grid(torch.sigmoid(self.decode(z)).cpu(), path, steps, pad=0, size=8,
                          title=f"decoded latent grid: z at Gaussian quantiles 5-95 % (epoch {epoch})",
                          axes=("z1", "z2", [(i, f"{float(q[i]):.1f}") for i in ticks]))


def _distinct_pairs(y: torch.Tensor, n: int) -> list[tuple[int, int]]:
    """``n`` pairs of indices of test images of different labels (a 3 and a 7, ...), deterministic."""
    pairs, used = [], set()
    for i in range(len(y)):
        for j in range(i + 1, len(y)):
            if i not in used and j not in used and y[i] != y[j]:
                pairs.append((i, j))
                used |= {i, j}
                break
        if len(pairs) == n:
            break
    return pairs


@register_model("vae", VAEConfig, kind="vae", accepts=VAE.accepts)
def vae(cfg: VAEConfig, io: ModelIO, dropout: float = 0.0) -> VAE:
    """Variational autoencoder: Gaussian q(z|x), Bernoulli decoder, ELBO in nats; binary image pixels."""
    return VAE(cfg, io, dropout)


def sample_run(run: str | Path, n: int, seed: int = 0, which: Literal["best", "last"] = "best") -> torch.Tensor:
    """``n`` prior samples (Bernoulli means in [0, 1], (n, C, H, W), on the CPU) of a trained VAE run folder."""
    from dl_ray.runs import load_model

    model, _ = load_model(run, which)
    if not isinstance(model, VAE):
        raise ValueError(f"{run}: not a VAE run (model {type(model).__name__})")
    return model.sample(n, torch.Generator().manual_seed(seed))


__all__ = ["VAE", "VAEConfig", "sample_run"]
