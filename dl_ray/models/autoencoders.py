"""Autoencoders (the course's AE section): one family, every variant chosen in the job file.

An autoencoder is an encoder f and a decoder g trained to reconstruct their input; per image the objective is

    loss = L(x, g(f(x~))) + Omega(h, x)

with x~ = x (or a corrupted copy: denoising), h = f(x~) the code, and L the squared error (``loss: mse``) or the
binary cross-entropy (``loss: bce``), summed over pixels. The variants are fields of one config:

* **under- / over-complete:** ``hidden`` (the last size is the code h; 784 pixels in MNIST);
* **activation:** sigmoid, tanh, relu, leaky_relu or linear (a linear AE with MSE learns the PCA subspace);
* **tied weights:** the decoder uses the encoder's W transposed (each layer keeps its own decoder bias);
* **sparse:** Omega = ``sparsity`` * sum_i |h_i|;
* **contractive:** Omega = ``contractive`` * ||dh/dx||_F^2 = sum_i ||grad_x h_i||^2; for one layer h = s(Wx + b)
  it is in closed form, sum_i s'(a_i)^2 ||W_i||^2; for a deep encoder it is the exact product of the layers' Jacobians;
* **denoising:** ``denoise: dropout`` drops each input unit with probability ``noise`` (new mask each time),
  ``denoise: gaussian`` adds N(0, ``noise``^2); the target stays the clean x;
* **stacked (deep AE training strategy):** with ``pretrain_epochs: k`` and hidden = (h1, ..., hL), epochs 0..k-1
  train the shallow tied AE x -> h1 -> x, the next k the shallow AE h1 -> h2 -> h1 on the (frozen) layer-1 codes,
  ...; then the L encoders are unrolled into a deep AE whose decoder weights start as the W_i^T (tying removed
  unless ``tied: true``) and the whole network is fine-tuned for the remaining epochs. Regularisers apply to the
  layer being trained (a stacked sparse / contractive / denoising AE), then to the deep code.

Reported (val/<name>, test/<name>): ``loss`` (the objective being minimised: the current stage's while
pre-training), ``mse`` (mean squared error per pixel of the reconstruction of the clean input against that input:
during pre-training the layers trained so far, each decoded with its tied W^T), ``mean_activation`` (mean |h_i| of
the code) and, for a denoising AE, ``denoise_mse`` (the reconstruction of a fixed-seed corrupted input against the
clean one). ``train/mse`` is the training batches' reconstruction error against their clean targets (the layer's
input while pre-training a layer > 1).

Pictures (``artifacts``): test digits and their reconstructions; for the first layer's most varied units the test
digit that activates each most, and each unit's weights W_i / ||W_i|| as an image (the input of unit norm that
excites it most). Only images with pixels in [0, 1] (``data.pixels: unit`` or ``binary``) are accepted.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, ValidationInfo, field_validator
from torch import nn

from dl_ray.models.base import ModelConfig, ModelIO
from dl_ray.models.task import Direction, StepContext, Task
from dl_ray.registry import register_model

AEActivation = Literal["sigmoid", "tanh", "relu", "leaky_relu", "linear"]
EVAL_SEED = 0
"""Seed of the corruption of every evaluation pass (``denoise_mse``, the denoising ``loss``): figures do not move."""
LEAKY_SLOPE = 0.01
JACOBIAN_CHUNK = 256
"""Rows per chunk when a deep encoder's Jacobian (rows x code x pixels) is formed for the contractive penalty."""


class AutoencoderConfig(ModelConfig):
    hidden: tuple[int, ...] = Field((64,), min_length=1)
    """Encoder layer sizes; the last is the code h (fewer units than pixels: under-complete, more: over-complete).
    The decoder mirrors them."""
    activation: AEActivation = "sigmoid"
    """Non-linearity of every hidden layer: sigmoid | tanh | relu | leaky_relu | linear (no non-linearity: PCA)."""
    output: Literal["sigmoid", "linear"] = "sigmoid"
    """Non-linearity of the reconstruction: sigmoid (pixels in [0, 1]) or linear."""
    loss: Literal["mse", "bce"] = "mse"
    """Reconstruction loss L, summed over pixels: mse (squared error) or bce (binary cross-entropy; needs output: sigmoid)."""
    tied: bool = False
    """Tie the decoder to the encoder: decoder weights = encoder weights transposed (only biases of its own)."""
    sparsity: float = Field(0.0, ge=0)
    """Sparse AE: lambda of Omega = lambda * sum_i |h_i| (per image); 0 = off."""
    contractive: float = Field(0.0, ge=0)
    """Contractive AE: lambda of Omega = lambda * ||dh/dx||_F^2 (per image); 0 = off."""
    denoise: Literal["none", "dropout", "gaussian"] = "none"
    """Denoising AE: corrupt the input by dropping units at random (dropout) or adding Gaussian noise; none = off."""
    noise: float = Field(0.0, ge=0)
    """Noise level of ``denoise``: the probability of dropping a unit (dropout, in [0, 1)) or the standard deviation
    of the Gaussian noise."""
    pretrain_epochs: int = Field(0, ge=0)
    """Stacked AE: epochs of greedy layer-wise pre-training per hidden layer (tied shallow AEs), then unroll and
    fine-tune the deep AE for the remaining epochs; 0 = train the deep AE end to end from the start."""
    units_shown: int = Field(40, ge=1)
    """How many first-layer units the pictures show (most varied on the test digits first)."""

    @field_validator("hidden")
    @classmethod
    def _positive_sizes(cls, hidden: tuple[int, ...]) -> tuple[int, ...]:
        if min(hidden) < 1:
            raise ValueError("every layer needs at least one unit")
        return hidden

    @field_validator("loss")
    @classmethod
    def _bce_needs_sigmoid(cls, loss: str, info: ValidationInfo) -> str:
        if loss == "bce" and info.data.get("output") == "linear":
            raise ValueError("bce needs reconstructions in [0, 1]: set output: sigmoid (or loss: mse)")
        return loss

    @field_validator("noise")
    @classmethod
    def _noise_level(cls, noise: float, info: ValidationInfo) -> float:
        denoise = info.data.get("denoise")
        if denoise == "dropout" and not 0 < noise < 1:
            raise ValueError("with denoise: dropout the noise level is a drop probability and must be in (0, 1)")
        if denoise == "gaussian" and noise <= 0:
            raise ValueError("with denoise: gaussian the noise level is a standard deviation and must be > 0")
        if denoise == "none" and noise:
            raise ValueError("a noise level needs a corruption: set denoise: dropout or denoise: gaussian")
        return noise


def act(name: str, z: torch.Tensor) -> torch.Tensor:
    """s(z) for an activation name (linear: z)."""
    if name == "sigmoid":
        return torch.sigmoid(z)
    if name == "tanh":
        return torch.tanh(z)
    if name == "relu":
        return F.relu(z)
    if name == "leaky_relu":
        return F.leaky_relu(z, LEAKY_SLOPE)
    return z


def act_grad(name: str, z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """s'(z), given z and s = s(z)."""
    if name == "sigmoid":
        return s * (1 - s)
    if name == "tanh":
        return 1 - s * s
    if name == "relu":
        return (z > 0).to(z.dtype)
    if name == "leaky_relu":
        return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, LEAKY_SLOPE))
    return torch.ones_like(z)


class Autoencoder(Task):
    kind = "autoencoder"

    @classmethod
    def accepts(cls, io: ModelIO) -> str | None:
        pixels = io.meta.get("pixels", "standardized")
        if len(io.input_shape) != 3 or pixels not in ("unit", "binary"):
            what = f"{pixels} pixels" if len(io.input_shape) == 3 else f"non-image data of shape {tuple(io.input_shape)}"
            return (f"model.name=autoencoder reconstructs images with pixels in [0, 1]: use image data with "
                    f"data.pixels: unit (e.g. data: {{name: mnist5k, pixels: unit}}); got {what}")
        return None

    def __init__(self, cfg: AutoencoderConfig, io: ModelIO, dropout: float = 0.0):
        super().__init__()
        if reason := self.accepts(io):
            raise ValueError(reason)
        if dropout:
            raise ValueError(f"regularization.dropout: {cfg.name} has no dropout layers; to drop input units at random "
                             f"set model.denoise: dropout and model.noise: {dropout} (a denoising AE)")
        self.cfg, self.shape = cfg, tuple(io.input_shape)
        sizes = [int(torch.tensor(self.shape).prod()), *cfg.hidden]
        self.sizes = sizes
        self.depth = len(cfg.hidden)
        self.enc = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.dbias = nn.ParameterList(nn.Parameter(torch.zeros(a)) for a in sizes[:-1])
        """Decoder biases: dbias[i] reconstructs the input of encoder layer i."""
        self.dweight = nn.ParameterList()
        """Untied decoder weights: dweight[i] (sizes[i] x sizes[i+1]) maps layer i's code back to its input."""
        if not cfg.tied:
            for a, b in zip(sizes, sizes[1:]):
                self.dweight.append(nn.Parameter(nn.Linear(b, a).weight.detach().clone()))
        self.register_buffer("stage", torch.tensor(0 if cfg.pretrain_epochs else self.depth))
        self.register_buffer("pixel_offset", torch.zeros(sizes[0]))
        """Added to the pixels' reconstruction (pre-activation): the first training batch's mean image (its logit for
        a sigmoid output), so that training starts from the mean digit and the units learn the rest; without it a
        sigmoid output starts at 0.5 everywhere and the hidden units saturate reproducing the mean image."""
        self.register_buffer("offset_set", torch.tensor(False))
        """Pre-training layer being trained (0 .. depth-1), or depth once the deep AE trains (unrolled)."""
        self.reports: dict[str, Direction] = {"loss": "min", "mse": "min", "mean_activation": "min"}
        if cfg.denoise != "none":
            self.reports["denoise_mse"] = "min"
        self._eval_noise: torch.Generator | None = None

    # ---- the networks
    def stage_at(self, epoch: int) -> int:
        """The stage an epoch (0-based) trains: a pre-training layer, or ``depth`` (the deep AE)."""
        k = self.cfg.pretrain_epochs
        return min(epoch // k, self.depth) if k else self.depth

    def untied(self) -> bool:
        """Whether the decoder now uses its own weights (not tied, and unrolled if stacked)."""
        return not self.cfg.tied and int(self.stage) == self.depth

    def decoder_weight(self, i: int) -> torch.Tensor:
        """The (sizes[i] x sizes[i+1]) matrix decoding layer i: W_i^T when tied (or while pre-training), else its own."""
        return self.dweight[i] if self.untied() else self.enc[i].weight.t()

    def encode_layer(self, i: int, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pre-activation z, code s(z)) of encoder layer i."""
        z = self.enc[i](a)
        return z, act(self.cfg.activation, z)

    def decode_layer(self, i: int, h: torch.Tensor, last: bool) -> torch.Tensor:
        """Layer i's decoder: pre-activation if ``last`` (the output non-linearity is applied by the caller), else s(.)."""
        z = F.linear(h, self.decoder_weight(i), self.dbias[i])
        if i == 0:
            return z + self.pixel_offset
        return z if last else act(self.cfg.activation, z)

    def output_act(self, stage: int) -> str:
        """Non-linearity of a reconstruction: the data's (``output``) for pixels, the hidden one for codes."""
        return self.cfg.output if stage in (0, self.depth) else self.cfg.activation

    def forward(self, x: torch.Tensor, stage: int | None = None) -> dict[str, torch.Tensor]:
        """One pass of the objective's network at ``stage`` (default: the current one), as DDP sees it.

        ``x`` is the (possibly corrupted) input of the stage: pixels (N, C, H, W) for the deep AE and layer 0, the
        previous layers' codes for a later pre-training layer. Returns the reconstruction's pre-activation ``out``,
        the code ``h``, and ``contraction`` = ||dh/dx||_F^2 per row when the contractive penalty is on."""
        stage = int(self.stage) if stage is None else stage
        a = x.flatten(1)
        layers = [stage] if stage < self.depth else list(range(self.depth))
        zs, codes = [], []
        for i in layers:
            z, a = self.encode_layer(i, a)
            zs.append(z)
            codes.append(a)
        h = a
        for j, i in enumerate(reversed(layers)):
            a = self.decode_layer(i, a, last=j == len(layers) - 1)
        out = {"out": a, "h": h}
        if self.cfg.contractive:
            out["contraction"] = self.contraction_from(layers, zs, codes)
        return out

    def contraction_from(self, layers: list[int], zs: list[torch.Tensor], codes: list[torch.Tensor]) -> torch.Tensor:
        """||dh/dx||_F^2 per row for the encoder ``layers`` applied in order (pre-activations ``zs``, codes ``codes``)."""
        name = self.cfg.activation
        grads = [act_grad(name, z, s) for z, s in zip(zs, codes)]
        if len(layers) == 1:  # closed form: sum_i s'(a_i)^2 ||W_i||^2
            w = self.enc[layers[0]].weight
            return grads[0].pow(2) @ w.pow(2).sum(dim=1)
        rows = []
        for chunk in range(0, len(grads[0]), JACOBIAN_CHUNK):  # J = D_L W_L ... D_1 W_1, from the code side
            g = [d[chunk:chunk + JACOBIAN_CHUNK] for d in grads]
            jac = g[-1][:, :, None] * self.enc[layers[-1]].weight
            for i, d in zip(reversed(layers[:-1]), reversed(g[:-1])):
                jac = (jac * d[:, None, :]) @ self.enc[i].weight
            rows.append(jac.pow(2).sum(dim=(1, 2)))
        return torch.cat(rows)

    def contraction(self, x: torch.Tensor, stage: int | None = None) -> torch.Tensor:
        """||dh/dx||_F^2 per image (the contractive penalty without lambda), whether or not the penalty is on."""
        stage = int(self.stage) if stage is None else stage
        layers = [stage] if stage < self.depth else list(range(self.depth))
        a, zs, codes = x.flatten(1), [], []
        for i in layers:
            z, a = self.encode_layer(i, a)
            zs.append(z)
            codes.append(a)
        return self.contraction_from(layers, zs, codes)

    def stage_input(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        """What the stage reconstructs: the pixels, or (pre-training layer > 0) the frozen lower layers' codes."""
        a = x.flatten(1)
        if 0 < stage < self.depth:
            with torch.no_grad():
                for i in range(stage):
                    a = self.encode_layer(i, a)[1]
        return a

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x~: units dropped with probability ``noise`` or Gaussian noise added (denoising); x itself otherwise."""
        cfg = self.cfg
        if cfg.denoise == "none":
            return x
        if cfg.denoise == "dropout":
            keep = torch.rand(x.shape, generator=generator, device="cpu" if generator else x.device).to(x) >= cfg.noise
            return x * keep
        return x + cfg.noise * torch.randn(x.shape, generator=generator, device="cpu" if generator else x.device).to(x)

    def reconstruction_loss(self, out: torch.Tensor, target: torch.Tensor, stage: int) -> torch.Tensor:
        """L per row, summed over units: on pixels the configured loss, on codes the squared error."""
        if stage in (0, self.depth) and self.cfg.loss == "bce":
            return F.binary_cross_entropy_with_logits(out, target, reduction="none").sum(dim=1)
        return (act(self.output_act(stage), out) - target).pow(2).sum(dim=1)

    def objective(self, net: nn.Module, x: torch.Tensor, stage: int, generator: torch.Generator | None = None):
        """(loss per row, reconstruction of the target, its clean target, code) of ``stage`` on images ``x``."""
        target = self.stage_input(x, stage)
        res = net(self.corrupt(target, generator), stage)
        loss = self.reconstruction_loss(res["out"], target, stage)
        if self.cfg.sparsity:
            loss = loss + self.cfg.sparsity * res["h"].abs().sum(dim=1)
        if self.cfg.contractive:
            loss = loss + self.cfg.contractive * res["contraction"]
        return loss, act(self.output_act(stage), res["out"]), target, res["h"]

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The model's reconstruction of images ``x`` (N, C, H, W) as it stands: the deep AE, or while pre-training
        the layers trained so far, each decoded with its tied W^T."""
        stage, a = int(self.stage), x.flatten(1)
        layers = range(min(stage + 1, self.depth))
        for i in layers:
            a = self.encode_layer(i, a)[1]
        for i in reversed(layers):
            a = self.decode_layer(i, a, last=i == 0)
        return act(self.cfg.output, a).reshape(x.shape)

    @torch.no_grad()
    def set_offset(self, x: torch.Tensor) -> None:
        """Start reconstructions at the mean image of ``x`` (a batch of training images)."""
        mean = x.flatten(1).float().mean(dim=0)
        self.pixel_offset.copy_(torch.logit(mean.clamp(0.01, 0.99)) if self.cfg.output == "sigmoid" else mean)
        self.offset_set.fill_(True)

    @torch.no_grad()
    def unroll(self) -> None:
        """End of pre-training: the deep AE's untied decoder weights start as the encoders' W_i^T."""
        for i in range(self.depth):
            if not self.cfg.tied:
                self.dweight[i].copy_(self.enc[i].weight.t())
        self.stage.fill_(self.depth)

    # ---- the task interface
    def training_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        stage = self.stage_at(ctx.epoch)
        if stage == self.depth and int(self.stage) < self.depth:
            self.unroll()
        else:
            self.stage.fill_(stage)
        x = batch[0]
        if not self.offset_set:
            self.set_offset(x)  # under DDP, rank 0's buffers reach every worker at the start of the forward pass
        net = ctx.nets["model"]
        with ctx.autocast:
            loss, recon, target, h = self.objective(net, x, stage)
        total = loss.float().mean()
        if stage < self.depth and isinstance(net, nn.parallel.DistributedDataParallel):
            # DDP waits for a gradient of every parameter: the layers not trained at this stage get a zero one
            trained = {id(p) for p in (*self.enc[stage].parameters(), self.dbias[stage])}
            total = total + 0.0 * sum(p.sum() for p in self.parameters() if id(p) not in trained)
        ctx.backward(total, "main")
        n = torch.tensor(float(len(x)), device=x.device)
        return {"loss": (loss.detach().float().sum(), n),
                "mse": ((recon.detach().float() - target).pow(2).mean(dim=1).sum(), n),
                "mean_activation": (h.detach().float().abs().mean(dim=1).sum(), n)}

    def evaluation(self):
        self._eval_noise = torch.Generator().manual_seed(EVAL_SEED)
        return super().evaluation()

    def eval_step(self, batch, metrics, nets) -> None:
        x = batch[0]
        n = float(len(x))
        stage = int(self.stage)
        loss, _, _, _ = self.objective(self, x, stage, self._eval_noise)
        metrics["loss"].update(loss.sum(), n)
        flat = x.flatten(1)
        metrics["mse"].update((self.reconstruct(x).flatten(1) - flat).pow(2).mean(dim=1).sum(), n)
        metrics["mean_activation"].update(self.code(x).abs().mean(dim=1).sum(), n)
        if "denoise_mse" in metrics:
            noisy = self.corrupt(x, self._eval_noise)
            metrics["denoise_mse"].update((self.reconstruct(noisy).flatten(1) - flat).pow(2).mean(dim=1).sum(), n)

    @torch.no_grad()
    def code(self, x: torch.Tensor, layers: int | None = None) -> torch.Tensor:
        """h of images ``x``: the output of the first ``layers`` encoders (default: those trained so far)."""
        a = x.flatten(1)
        for i in range(min(int(self.stage) + 1, self.depth) if layers is None else layers):
            a = self.encode_layer(i, a)[1]
        return a

    # ---- pictures
    @torch.no_grad()
    def artifacts(self, run_dir: Path, epoch: int, data: Any) -> list[Path]:
        from dl_ray.plots import image_grid

        device = next(self.parameters()).device
        x = data.test.tensors[0].to(device)
        rows = [x[:10]]
        if "denoise_mse" in self.reports:
            noisy = self.corrupt(x[:10], torch.Generator().manual_seed(EVAL_SEED))
            rows += [noisy.clamp(0, 1), self.reconstruct(noisy)]
        rows.append(self.reconstruct(x[:10]))
        what = ("test digits, corrupted, reconstructed from the corrupted ones, reconstructed from the clean ones"
                if len(rows) == 4 else "test digits (top) and their reconstructions (bottom)")
        paths = [image_grid(torch.cat(rows).cpu(), run_dir / "reconstructions.png", title=f"{what} (epoch {epoch})")]

        h = self.code(x, layers=1)
        units = h.std(dim=0).argsort(descending=True)[: self.cfg.units_shown]
        best = h[:, units].argmax(dim=0)
        labels = [f"u{int(u)}" for u in units]
        paths.append(image_grid(x[best].cpu(), run_dir / "max_activation.png", labels=labels,
                                title="the test digit that activates each first-layer unit most (most varied units first)"))
        w = self.enc[0].weight[units]
        w = w / w.norm(dim=1, keepdim=True).clamp(min=1e-12)
        img = (0.5 + 0.5 * w / w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)).reshape(len(units), *self.shape)
        paths.append(image_grid(img.cpu(), run_dir / "weights.png", labels=labels,
                                title="first-layer weights W_i / ||W_i||: the unit-norm input that excites unit i most "
                                      "(grey = 0, white > 0, black < 0)"))
        return paths


@register_model("autoencoder", AutoencoderConfig, kind="autoencoder", accepts=Autoencoder.accepts)
def autoencoder(cfg: AutoencoderConfig, io: ModelIO, dropout: float = 0.0) -> Autoencoder:
    """Autoencoder: under/over-complete, tied, sparse, denoising, contractive or stacked (images in [0, 1])."""
    return Autoencoder(cfg, io, dropout)
