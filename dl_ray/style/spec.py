"""The style-transfer job file (``kind: style_transfer``): typed sections, a docstring per field.

    kind: style_transfer
    name: style_transfer
    content: skimage:chelsea                 # or any image file
    style: skimage:immunohistochemistry
    size: 128                                # the content's longer side, in pixels
    features: {weights: null}                # or vgg19-dcbb9e9d.pth, torchvision's ImageNet file
    costs: {content_layer: relu4_2, style_layers: {relu1_1: 0.2, ...}, alpha: 1, beta: 1000}
    optimizer: {name: lbfgs, lr: 1.0}        # or adam
    training: {steps: 100, init: content, noise_ratio: 0.2, save_every: 25}

Every problem is one SpecError line naming the field and what it allows, before anything is written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from dl_ray import kinds
from dl_ray.errors import SpecError
from dl_ray.models.style_features import LAYER_INDEX, LAYERS
from dl_ray.spec import RunFolder, Section, StorageSpec, TrackingSpec, describe

KIND = "style_transfer"
# Gatys et al.'s conv1_1 ... conv5_1 and conv4_2 were Caffe blobs that the in-place ReLU had rectified: relu*_* here
GATYS_STYLE_LAYERS = {"relu1_1": 0.2, "relu2_1": 0.2, "relu3_1": 0.2, "relu4_1": 0.2, "relu5_1": 0.2}


def _known_layer(name: str) -> str:
    if name not in LAYER_INDEX:
        raise ValueError(f"unknown layer {name!r}; allowed: VGG-19's {', '.join(LAYERS)}")
    return name


class FeaturesSpec(Section):
    weights: Path | None = None
    """A state dict file with torchvision's vgg19 keys (e.g. its published ImageNet file vgg19-dcbb9e9d.pth;
    classifier.* keys are skipped); null: random He-initialised weights (see the README for what to expect)."""
    pooling: Literal["max", "avg"] = "max"
    """VGG's pooling: max (the network as trained) or avg (Gatys et al.'s choice: smoother gradients)."""
    seed: int = 0
    """Seed of the random weights when no file is given."""

    @field_validator("weights")
    @classmethod
    def _absolute(cls, v: Path | None) -> Path | None:
        return v.absolute() if v is not None else None  # a sweep's trials run in another folder


class CostsSpec(Section):
    content_layer: str = "relu4_2"
    """The layer whose activations J_content compares (VGG-19 names: conv1_1 ... conv5_4, relu*, pool1 ... pool5)."""
    style_layers: dict[str, float] = Field(default_factory=lambda: dict(GATYS_STYLE_LAYERS), min_length=1)
    """Layer -> lambda_l, the weight of its style cost J_style^[l] in J_style = sum_l lambda_l J_style^[l]."""
    alpha: float = Field(1.0, ge=0)
    """Weight of J_content in J(G) = alpha J_content + beta J_style (>= 0)."""
    beta: float = Field(1.0e3, ge=0)
    """Weight of J_style in J(G) (>= 0); beta/alpha sets how much style the result takes."""

    @field_validator("content_layer")
    @classmethod
    def _content_layer(cls, v: str) -> str:
        return _known_layer(v)

    @field_validator("style_layers")
    @classmethod
    def _style_layers(cls, v: dict[str, float]) -> dict[str, float]:
        for name, weight in v.items():
            _known_layer(name)
            if not weight >= 0:
                raise ValueError(f"lambda of {name} must be >= 0, got {weight}")
        return v

    @model_validator(mode="after")
    def _something_to_optimise(self):
        if self.alpha == 0 and self.beta == 0:
            raise ValueError("alpha and beta are both 0: nothing to optimise; allowed: alpha >= 0, beta >= 0, not both 0")
        return self


class PixelOptimizerSpec(Section):
    name: Literal["adam", "lbfgs"] = "lbfgs"
    """adam, or lbfgs (L-BFGS with a strong-Wolfe line search; one step = one L-BFGS iteration)."""
    lr: float = Field(1.0, gt=0)
    """Step size on pixels in [0, 1] (adam: 0.01 to 0.05; lbfgs: 1.0, the line search scales it)."""
    history_size: int = Field(20, ge=1)
    """lbfgs: the curvature pairs kept."""


class StyleTrainingSpec(Section):
    steps: int = Field(100, ge=1)
    """Optimisation steps on the pixels."""
    init: Literal["noise", "content"] = "content"
    """G's start: noise (uniform in [0, 1]) or the content image blended with noise_ratio of noise."""
    noise_ratio: float = Field(0.2, ge=0, le=1)
    """init content: G0 = noise_ratio * noise + (1 - noise_ratio) * content."""
    seed: int = 0
    """Seed of the initial noise."""
    save_every: int = Field(25, ge=1)
    """Write the generated image (generated/step_NNNN.png) every this many steps."""
    progress_every_s: float = Field(5.0, gt=0)
    """Seconds between two progress lines."""

    @property
    def epochs(self) -> int:
        """A sweep counts one optimisation as one epoch (dl_ray/tune's trial outcomes)."""
        return 1


class StyleScalingSpec(Section):
    use_gpu: bool = False
    """Optimise on the GPU (when CUDA is there; else the run says so and uses the CPU)."""
    cpus_per_worker: float = Field(1.0, gt=0)
    """CPUs a sweep's trial holds."""
    num_workers: ClassVar[int] = 0  # one image, in this process: what dl_ray/tune asks of a job's scaling
    resources_per_worker: ClassVar[dict[str, float]] = {}


class StyleTransferSpec(RunFolder, Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Job name (letters, digits, '_', '-', '.'); the run folder is storage.path/name."""
    kind: Literal["style_transfer"] = KIND
    """style_transfer: the pixels of one image are optimised (dl-ray train); no dataset, no epochs."""
    description: str = ""
    content: str = "skimage:chelsea"
    """The content image C: skimage:NAME (scikit-image's bundled images, e.g. skimage:astronaut) or a file path."""
    style: str = "skimage:immunohistochemistry"
    """The style image S: skimage:NAME or a file path; scaled to cover the content's size, centre-cropped."""
    size: int = Field(128, ge=32, le=4096)
    """The content image's longer side in pixels; the generated image G has the content's size."""
    features: FeaturesSpec = FeaturesSpec()
    """The VGG-19 whose activations the costs compare: a weights file, or random weights."""
    costs: CostsSpec = CostsSpec()
    """The layers and weights of J(G) = alpha J_content + beta J_style."""
    optimizer: PixelOptimizerSpec = PixelOptimizerSpec()
    """What updates the pixels of G."""
    training: StyleTrainingSpec = StyleTrainingSpec()
    """Steps, G's start, and when images and progress lines are written."""
    scaling: StyleScalingSpec = StyleScalingSpec()
    """CPU or GPU."""
    tracking: TrackingSpec = TrackingSpec()
    """W&B (offline by default): the costs per step and the images."""
    storage: StorageSpec = StorageSpec()
    """Where the run folder goes: storage.path/storage.name (default: the job's name)."""

    @property
    def layers(self) -> list[str]:
        """Every layer the costs read."""
        return list(dict.fromkeys([self.costs.content_layer, *self.costs.style_layers]))


def parse_style(raw: dict[str, Any]) -> StyleTransferSpec:
    """A style-transfer job as a dict, validated; every problem is one SpecError line."""
    kinds.require(raw, "train")
    try:
        return StyleTransferSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(describe(e, StyleTransferSpec, "")) from None


def absolute_paths(raw: dict[str, Any]) -> dict[str, Any]:
    """Image files as absolute paths (a sweep's trials run elsewhere); skimage: names stay."""
    from dl_ray.style.images import PREFIX

    for field in ("content", "style"):
        value = raw.get(field)
        if isinstance(value, str) and not value.startswith(PREFIX):
            raw[field] = str(Path(value).absolute())
    return raw
