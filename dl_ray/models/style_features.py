"""The features neural style transfer compares: VGG-19's convolution stages, layers named as Gatys et al. name them.

The network is :func:`dl_ray.models.vgg.vgg_features` at ``depth: 19, size: imagenet``, so its state_dict keys
and shapes are torchvision's ``vgg19`` (``features.0.weight`` ... ``features.34.bias``): the published ImageNet
file loads as it is (its ``classifier.*`` keys are not needed and are skipped). A layer is named by stage and
position: ``conv4_2`` is the second convolution of stage 4 (torchvision index 21), ``relu4_2`` the ReLU after it
(22), ``pool4`` the pooling that ends the stage (27). Images come in as RGB in [0, 1] and are normalised with
ImageNet's mean and standard deviation, as the published weights expect.

Without a weights file the network keeps He-initialised random weights (``seed``): random multi-scale
convolutional features still capture texture statistics through their Gram matrices (Ustyuzhaninov et al. 2017;
He, Wang & Hopcroft 2016), so style transfer works, more weakly (the README says what to expect).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn

from dl_ray.models.conv_blocks import init_conv_weights, load_weights
from dl_ray.models.vgg import CONVS_PER_STAGE, VGGConfig, vgg_features

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def layer_names(depth: int = 19) -> list[str]:
    """Gatys-style names of VGG's ``features`` modules, in torchvision's order (index = position in the list)."""
    names = []
    for stage, repeats in enumerate(CONVS_PER_STAGE[depth], start=1):
        for i in range(1, repeats + 1):
            names += [f"conv{stage}_{i}", f"relu{stage}_{i}"]
        names.append(f"pool{stage}")
    return names


LAYERS = layer_names(19)
LAYER_INDEX = {name: i for i, name in enumerate(LAYERS)}


class VGG19Features(nn.Module):
    """VGG-19's ``features`` (torchvision's keys), returning the activations of the named layers.

    ``pooling: avg`` swaps max pooling for average pooling (Gatys et al.: smoother gradients, no parameters
    change, so a weights file still loads). Only the layers up to the deepest one asked for are run."""

    def __init__(self, weights: Path | None = None, pooling: Literal["max", "avg"] = "max", seed: int = 0,
                 field: str = "features.weights"):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # random weights from their own seed, not the caller's stream
            torch.manual_seed(seed)
            self.features, _ = vgg_features(VGGConfig(name="vgg", depth=19, size="imagenet"), 3, 224)
            init_conv_weights(self.features)
        if weights is not None:
            load_weights(self, Path(weights), field=field, ignore=("classifier.",))
        for i, module in enumerate(self.features):
            if isinstance(module, nn.ReLU):
                module.inplace = False  # a conv layer's output is a feature too: a ReLU must not overwrite it
            elif isinstance(module, nn.MaxPool2d) and pooling == "avg":
                self.features[i] = nn.AvgPool2d(2, 2)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def forward(self, image: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """{layer: activation (N, C, H, W)} for ``image`` (N, 3, H, W) in [0, 1]."""
        wanted = {LAYER_INDEX[name]: name for name in layers}
        x, out = (image - self.mean) / self.std, {}
        for i, module in enumerate(self.features[: max(wanted) + 1]):
            x = module(x)
            if i in wanted:
                out[wanted[i]] = x
        return out
