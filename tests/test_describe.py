"""``dl-ray describe``: shapes, parameters, multiply-adds and receptive fields per layer, checked by hand."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dl_ray.cli import main
from dl_ray.describe import compact, job_summaries
from dl_ray.layer_summary import WHOLE, Field, summarize
from tests.conftest import ROOT

LENET = str(ROOT / "jobs/mnist_lenet.yaml")


def fields(summary) -> dict[str, object]:
    return {r.name: r.field.r[0] if isinstance(r.field, Field) else r.field for r in summary.rows}


def test_lenet_rows_equal_the_hand_computed_values():
    _, data, [s] = job_summaries(LENET)
    rows = {r.name: (r.kind, r.shape, r.params, r.macs) for r in s.rows}
    assert rows == {  # 1x28x28 in; conv 5x5 pad 2, pool 2, conv 5x5, pool 2, 400 -> 120 -> 84 -> 10
        "features.0": ("Conv2d", "6x28x28", 6 * 25 + 6, 6 * 28 * 28 * 25),
        "features.3": ("MaxPool2d", "6x14x14", 0, 0),
        "features.4": ("Conv2d", "16x10x10", 16 * 6 * 25 + 16, 16 * 10 * 10 * 6 * 25),
        "features.7": ("MaxPool2d", "16x5x5", 0, 0),
        "features.8": ("Flatten", "400", 0, 0),
        "classifier.0": ("Linear", "120", 400 * 120 + 120, 400 * 120),
        "classifier.3": ("Linear", "84", 120 * 84 + 84, 120 * 84),
        "classifier.6": ("Linear", "10", 84 * 10 + 10, 84 * 10),
    }
    # r: 5; pool 2 (j 1 -> 2): 5 + 1 = 6; conv 5: 6 + 4*2 = 14; pool 2 (j 2 -> 4): 14 + 1*2 = 16; then all of it
    assert fields(s) == {"features.0": 5, "features.3": 6, "features.4": 14, "features.7": 16,
                         "features.8": WHOLE, "classifier.0": WHOLE, "classifier.3": WHOLE, "classifier.6": WHOLE}
    from dl_ray.models import build_model
    from dl_ray.spec import load_spec

    spec = load_spec(LENET)
    model = build_model(spec.model, data.io, spec.regularization.dropout)
    assert s.params == sum(p.numel() for p in model.parameters()) == sum(r.params for r in s.rows) == 61_706
    assert s.macs == 117_600 + 240_000 + 48_000 + 10_080 + 840
    assert s.fc_params == 48_120 + 10_164 + 850  # 95.8 %: most parameters sit in the fully connected layers
    assert s.hidden == {"ReLU": 4, "Identity": 2, "Dropout": 2}


class ResidualToy(nn.Module):
    """a = conv3(x), b = conv3(relu(a)); relu(b + a) -> pool 2 -> dilated conv3 (+ itself) -> linear."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.c3 = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        a = self.c1(x)
        y = self.pool(torch.relu(self.c2(torch.relu(a)) + a))
        return self.fc(torch.flatten(self.c3(y) + y, 1))


class BranchToy(nn.Module):
    """An Inception-like concat of 1x1 | 1x1 -> 3x3 | 5x5 | pool 3 (stride 1) -> 1x1, then a stride-2 3x3
    convolution, a 2x2 max pool and a 3x3 convolution."""

    def __init__(self):
        super().__init__()
        self.b1 = nn.Conv2d(2, 2, 1)
        self.b2 = nn.Sequential(nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 3, padding=1))
        self.b3 = nn.Conv2d(2, 2, 5, padding=2)
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(2, 2, 1))
        self.tail = nn.Sequential(nn.Conv2d(8, 4, 3, stride=2, padding=1), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3))

    def forward(self, x):
        return self.tail(torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1))


def test_residual_adds_take_the_widest_branch():
    s = summarize(ResidualToy(), (torch.zeros(1, 1, 16, 16),))
    f = fields(s)
    assert (f["c1"], f["c2"], f["add"], f["pool"]) == (3, 5, 5, 6)  # max(5, 3) at the add; pool 2: 5 + 1, j = 2
    assert f["c3"] == 6 + (3 - 1) * 2 * 2 == f["add_1"] == 14  # dilation 2 at jump 2; max(14, 6)
    assert (f["flatten"], f["fc"]) == (WHOLE, WHOLE)
    assert s.params == sum(p.numel() for p in ResidualToy().parameters())
    assert next(r.macs for r in s.rows if r.name == "c3") == 4 * 8 * 8 * 4 * 9


def test_concat_takes_the_widest_branch_then_strides_multiply_the_jump():
    s = summarize(BranchToy(), (torch.zeros(1, 2, 20, 20),))
    f = fields(s)
    assert (f["b1"], f["b2.1"], f["b3"], f["b4.0"], f["b4.1"]) == (1, 3, 5, 3, 3)
    assert f["cat"] == 5
    assert (f["tail.0"], f["tail.1"], f["tail.2"]) == (5 + 2, 7 + 1 * 2, 9 + 2 * 4)  # j: 1 -> 2 -> 4
    assert next(r.shape for r in s.rows if r.name == "cat") == "8x20x20"


def test_functional_layers_count_their_parameters_and_field():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.w, self.fc = nn.Parameter(torch.randn(3, 2, 3, 3)), nn.Parameter(torch.randn(5, 3 * 3 * 3))

        def forward(self, x):
            h = F.max_pool2d(F.conv2d(x, self.w, stride=2, dilation=2), 2)  # 15 -> 6 -> 3
            return F.linear(h.flatten(1), self.fc)

    s = summarize(Functional(), (torch.zeros(1, 2, 15, 15),))
    rows = {r.name: (r.shape, r.params, r.macs, r.field.r[0] if isinstance(r.field, Field) else r.field) for r in s.rows}
    assert rows["conv2d"] == ("3x6x6", 54, 3 * 36 * 2 * 9, 5)  # r = 1 + 2 * 2, j = 2
    assert rows["max_pool2d"] == ("3x3x3", 0, 0, 7)  # 5 + 1 * 2
    assert rows["linear"] == ("5", 135, 135, WHOLE)
    assert s.fc_params == 135 and s.params == 189


def test_an_untraceable_network_is_described_from_hooks():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            h = self.a(x)
            return self.b(h if h.sum() > 0 else -h)  # data-dependent: torch.fx cannot trace it

    s = summarize(Branchy(), (torch.ones(1, 4),))
    assert s.traced and "control flow" in s.traced
    assert [(r.name, r.shape, r.params, r.macs) for r in s.rows] == [("a", "8", 40, 32), ("b", "2", 18, 16)]


@pytest.mark.parametrize(("n", "text"), [(156, "156"), (61_100_840, "61.1M"), (3_200_000_000, "3.2G"),
                                         (2_416, "2.42K"), (999_600, "1M"), (48_000, "48K")])
def test_numbers_are_compact(n, text):
    assert compact(n) == text


def test_the_cli_table_fits_80_columns(capsys):
    assert main(["describe", LENET]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "classifier.0  Linear     120        48.1K  78.0%        48K    whole" in out
    assert "fully connected layers: 95.8% of the parameters" in out


@pytest.mark.parametrize(("args", "expected"), [
    (["--set", "model.name=lenet6"], "model.name: unknown model 'lenet6'"),
    (["--set", "data.path=/nowhere.csv"], "data.path: no such file"),
    (["--set", "model.pooling=median"], "model.pooling: Input should be 'max' or 'avg'"),
])
def test_a_bad_job_is_one_line_and_exit_2(tmp_path, capsys, args, expected):
    assert main(["describe", LENET, *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and expected in err


def test_a_missing_job_file_is_one_line_and_exit_2(capsys):
    assert main(["describe", "no/such/job.yaml"]) == 2
    assert capsys.readouterr().err == "error: job file: no such file: no/such/job.yaml\n"


@pytest.mark.parametrize(("name", "extra", "gmacs", "field"), [
    ("alexnet", {}, 0.71, 195), ("vgg", {"depth": 16}, 15.47, 212), ("resnet", {"depth": 18}, 1.81, 435),
    ("resnet", {"depth": 50}, 4.09, 427),
])
def test_imagenet_networks_match_published_costs_and_fields(name, extra, gmacs, field, one_torch_thread):
    """torchvision's published GFLOPS (multiply-adds) per 224x224 image, and the receptive field of the last
    convolutional map: AlexNet 195 and VGG-16 212 px as in Araujo et al. (Distill 2019); ResNet-18 by hand:
    7 (conv1, j 2), 11 (pool, j 4), +8 x 4 = 43, +8 +16 x 3 = 99 (j 8), +16 +32 x 3 = 211, +32 +64 x 3 = 435;
    ResNet-50 (stride on the 3x3): 11, +8 x 3 = 35, +8 +16 x 3 = 91, +16 +32 x 5 = 267, +32 +64 x 2 = 427."""
    from dl_ray.models import ModelIO, build_model
    from dl_ray.registry import MODELS

    model = build_model(MODELS[name].config(name=name, size="imagenet", **extra), ModelIO((3, 224, 224), 1000, "multiclass"))
    s = summarize(model, (torch.zeros(1, 3, 224, 224),))
    assert round(s.macs / 1e9, 2) == gmacs
    assert s.params == sum(p.numel() for p in model.parameters())
    spatial = [r.field.r[0] for r in s.rows if isinstance(r.field, Field)]
    assert spatial[-1] == field
