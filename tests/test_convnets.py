"""The CNN case studies: convolution arithmetic, torchvision-exact ImageNet networks, small-input variants.

PyPI's torchvision does not import beside the CPU torch here, so torchvision is the reference through its
published parameter counts and through the parameter names and shapes of its model files (pytorch/vision,
``torchvision/models/{alexnet,vgg,resnet,googlenet}.py``), written out below independently of our builders.
"""
from __future__ import annotations

import json
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dl_ray.cli import main
from dl_ray.errors import SpecError
from dl_ray.models import ModelIO, build_model
from dl_ray.models.conv_blocks import conv, conv1x1, linear_as_conv, out_size, padding_amount, pool
from dl_ray.models.inception import InceptionModule, ModuleSpec, module_cost
from dl_ray.registry import MODELS
from dl_ray.spec import parse_spec
from tests.conftest import write_job

IMAGENET = ModelIO((3, 224, 224), 1000, "multiclass")
MNIST = ModelIO((1, 28, 28), 10, "multiclass")


def build(name: str, io: ModelIO = MNIST, **fields):
    return build_model(MODELS[name].config(name=name, **fields), io)


def on_meta(name: str, io: ModelIO = IMAGENET, **fields):
    """An ImageNet-size network without allocating its weights (shapes and counts only)."""
    with torch.device("meta"):
        return build(name, io, **fields)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- convolution arithmetic

@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 40), f=st.integers(1, 7), s=st.integers(1, 4), p=st.integers(0, 3))
def test_output_size_formula_equals_torch_convolution(n, f, s, p):
    expected = out_size(n, f, s, p)
    layer = nn.Conv2d(1, 1, f, stride=s, padding=p)
    if expected < 1:
        with pytest.raises(RuntimeError):
            layer(torch.zeros(1, 1, n, n))
    else:
        assert layer(torch.zeros(1, 1, n, n)).shape[-1] == expected


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 40), f=st.integers(1, 6), s=st.integers(1, 4), p=st.integers(0, 3),
       ceil=st.booleans(), kind=st.sampled_from([nn.MaxPool2d, nn.AvgPool2d]))
def test_output_size_formula_equals_torch_pooling(n, f, s, p, ceil, kind):
    if 2 * p > f:  # torch refuses padding over half the window
        return
    expected = out_size(n, f, s, p, ceil)
    layer = kind(f, stride=s, padding=p, ceil_mode=ceil)
    if expected < 1:
        with pytest.raises(RuntimeError):
            layer(torch.zeros(1, 1, n, n))
    else:
        assert layer(torch.zeros(1, 1, n, n)).shape[-1] == expected


def test_same_padding_keeps_the_size_and_valid_shrinks_it():
    x = torch.zeros(1, 2, 11, 11)
    assert conv(2, 3, 5, padding="same")(x).shape[-2:] == (11, 11)
    assert conv(2, 3, 5, padding="valid")(x).shape[-2:] == (7, 7)
    assert conv(2, 3, 3, stride=2, padding="same")(x).shape[-2:] == (6, 6)  # ceil(11 / 2)
    assert conv(2, 3, 3, padding=2)(x).shape[-2:] == (13, 13)
    assert pool("max", 2)(x).shape[-2:] == (5, 5) and pool("avg", 3, 1, padding="same")(x).shape[-2:] == (11, 11)
    with pytest.raises(ValueError, match="odd kernel"):
        padding_amount("same", 4)


def test_max_pooling_keeps_the_largest_and_average_pooling_the_mean():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert pool("max", 2)(x).flatten().tolist() == [5, 7, 13, 15]
    assert pool("avg", 2)(x).flatten().tolist() == [2.5, 4.5, 10.5, 12.5]


def test_1x1_convolution_is_a_dense_layer_on_every_pixel():
    torch.manual_seed(0)
    layer, x = conv1x1(8, 3), torch.randn(2, 8, 5, 5)
    by_hand = torch.einsum("oc,nchw->nohw", layer.weight[:, :, 0, 0], x) + layer.bias.view(1, 3, 1, 1)
    assert layer(x).shape == (2, 3, 5, 5)  # 8 channels reduced to 3, the size kept
    torch.testing.assert_close(layer(x), by_hand)


def test_dense_layers_as_convolutions_equal_them_and_slide_over_larger_images():
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(4 * 5 * 5, 16), nn.Linear(16, 3)
    conv1, conv2 = linear_as_conv(fc1, (4, 5, 5)), linear_as_conv(fc2, (16, 1, 1))
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(conv2(conv1(x)).flatten(1), fc2(fc1(x.flatten(1))))
    big = torch.randn(1, 4, 7, 8)  # every 5x5 window at once: a 3x4 map of the classifier's outputs
    out = conv2(conv1(big))
    assert out.shape == (1, 3, 3, 4)
    torch.testing.assert_close(out[0, :, 2, 1], fc2(fc1(big[:, :, 2:7, 1:6].flatten(1)))[0])
    with pytest.raises(ValueError, match="100 inputs"):
        linear_as_conv(fc1, (4, 4, 4))


# ---------------------------------------------------------------- ImageNet networks = torchvision's

@pytest.mark.parametrize("name, fields, expected", [
    ("alexnet", {}, 61_100_840),
    ("vgg", {"depth": 16}, 138_357_544),
    ("vgg", {"depth": 11}, 132_863_336),
    ("vgg", {"depth": 16, "batch_norm": True}, 138_365_992),
    ("resnet", {"depth": 18}, 11_689_512),
    ("resnet", {"depth": 34}, 21_797_672),
    ("resnet", {"depth": 50}, 25_557_032),
    ("resnet", {"depth": 101}, 44_549_160),
    ("resnet", {"depth": 152}, 60_192_808),
    ("googlenet", {"variant": "torchvision"}, 6_624_904),
])
def test_imagenet_networks_have_torchvisions_parameter_counts(name, fields, expected):
    assert count(on_meta(name, size="imagenet", **fields)) == expected


def test_the_papers_googlenet_differs_from_torchvisions_by_its_5x5_convolutions_and_batch_norm():
    paper = on_meta("googlenet", size="imagenet")
    assert count(paper) == 6_998_552
    assert paper.inception3a.branch3[1].conv.kernel_size == (5, 5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in paper.modules())
    tv = on_meta("googlenet", size="imagenet", variant="torchvision")
    assert tv.inception3a.branch3[1].conv.kernel_size == (3, 3) and tv.inception3a.branch3[1].conv.bias is None


def torchvision_resnet18_keys() -> dict[str, tuple[int, ...]]:
    """Every entry of torchvision's resnet18().state_dict(), from the layout of its resnet.py."""
    def bn(prefix, c):
        return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
                f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}

    keys = {"conv1.weight": (64, 3, 7, 7), **bn("bn1", 64)}
    c_in = 64
    for i, width in enumerate((64, 128, 256, 512), start=1):
        for j in range(2):
            block = f"layer{i}.{j}"
            keys |= {f"{block}.conv1.weight": (width, c_in, 3, 3), **bn(f"{block}.bn1", width),
                     f"{block}.conv2.weight": (width, width, 3, 3), **bn(f"{block}.bn2", width)}
            if j == 0 and i > 1:
                keys |= {f"{block}.downsample.0.weight": (width, c_in, 1, 1), **bn(f"{block}.downsample.1", width)}
            c_in = width
    return keys | {"fc.weight": (1000, 512), "fc.bias": (1000,)}


TORCHVISION_KEYS = {  # a few entries of each torchvision state dict, with their shapes
    ("alexnet", ()): {"features.0.weight": (64, 3, 11, 11), "features.3.weight": (192, 64, 5, 5),
                      "features.10.bias": (256,), "classifier.1.weight": (4096, 9216),
                      "classifier.4.weight": (4096, 4096), "classifier.6.bias": (1000,)},
    ("vgg", ()): {"features.0.weight": (64, 3, 3, 3), "features.28.weight": (512, 512, 3, 3),
                  "classifier.0.weight": (4096, 25088), "classifier.3.weight": (4096, 4096),
                  "classifier.6.weight": (1000, 4096)},
    ("vgg", (("batch_norm", True),)): {"features.1.running_var": (64,), "features.40.weight": (512, 512, 3, 3),
                                      "features.41.num_batches_tracked": ()},
    ("resnet", (("depth", 50),)): {"layer1.0.conv3.weight": (256, 64, 1, 1), "layer1.0.downsample.0.weight": (256, 64, 1, 1),
                                   "layer2.0.conv2.weight": (128, 128, 3, 3), "layer4.2.bn3.running_mean": (2048,),
                                   "fc.weight": (1000, 2048)},
    ("googlenet", (("variant", "torchvision"),)): {
        "conv1.conv.weight": (64, 3, 7, 7), "conv1.bn.running_var": (64,), "conv3.conv.weight": (192, 64, 3, 3),
        "inception3a.branch1.conv.weight": (64, 192, 1, 1), "inception3a.branch2.1.conv.weight": (128, 96, 3, 3),
        "inception3a.branch3.1.conv.weight": (32, 16, 3, 3), "inception3a.branch4.1.conv.weight": (32, 192, 1, 1),
        "inception5b.branch4.1.bn.num_batches_tracked": (), "fc.weight": (1000, 1024)},
}
KEY_COUNTS = {"alexnet": 16, "vgg": 32, "resnet": 320, "googlenet": 344}


@pytest.mark.parametrize("name, fields", list(TORCHVISION_KEYS))
def test_imagenet_networks_use_torchvisions_parameter_names_and_shapes(name, fields):
    state = on_meta(name, size="imagenet", **dict(fields)).state_dict()
    assert {k: tuple(state[k].shape) for k in TORCHVISION_KEYS[name, fields] if k in state} == TORCHVISION_KEYS[name, fields]
    if not fields or name in ("resnet", "googlenet"):
        assert len(state) == KEY_COUNTS[name]


def save(state: dict[str, torch.Tensor], path) -> str:
    torch.save(state, path)
    return str(path)


def test_torchvision_keyed_weights_load_from_a_file(tmp_path):
    torch.manual_seed(0)
    state = {k: torch.randn(s) if s else torch.tensor(7) for k, s in torchvision_resnet18_keys().items()}
    model = build("resnet", IMAGENET, size="imagenet", weights=save(state, tmp_path / "r18.pth"))
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_googlenet_ignores_the_auxiliary_classifiers_of_torchvisions_file(tmp_path):
    reference = on_meta("googlenet", MNIST, size="small", variant="torchvision")
    state = {k: torch.ones(v.shape) for k, v in reference.state_dict().items()}
    state |= {"aux1.fc2.weight": torch.zeros(10, 1024), "aux2.conv.conv.weight": torch.zeros(128, 528, 1, 1)}
    model = build("googlenet", size="small", variant="torchvision", weights=save(state, tmp_path / "g.pth"))
    assert torch.equal(model.fc.weight, torch.ones_like(model.fc.weight))


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("layer2.0.downsample.1.running_mean"), "missing key layer2.0.downsample.1.running_mean"),
    (lambda s: s.update({"layer5.0.conv1.weight": torch.zeros(1)}), "unexpected key layer5.0.conv1.weight"),
    (lambda s: s.update({"fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}),
     r"fc.weight has shape \(10, 512\) in the file, \(1000, 512\) in the model"),
    (lambda s: s.update({"bn1.bias": torch.zeros(3), "fc.weight": torch.zeros(3)}),  # the first in the model's order
     r"bn1.bias has shape \(3,\) in the file, \(64,\) in the model"),
], ids=["missing", "unexpected", "shape", "first-in-order"])
def test_weights_that_do_not_fit_name_the_first_mismatch(tmp_path, change, message):
    state = {k: torch.zeros(s) for k, s in torchvision_resnet18_keys().items()}
    change(state)
    path = save(state, tmp_path / "w.pth")
    with pytest.raises(SpecError, match=f"^model.weights: {re.escape(path)} does not fit model ResNet: {message}$"):
        build("resnet", IMAGENET, size="imagenet", weights=path)


def test_a_weights_file_that_is_missing_or_not_a_state_dict_is_one_line(tmp_path):
    with pytest.raises(SpecError, match="^model.weights: no such file: .*nothing.pth$"):
        build("alexnet", weights=str(tmp_path / "nothing.pth"))
    (tmp_path / "text.pth").write_text("not a tensor file")
    with pytest.raises(SpecError, match="is not a PyTorch state dict file"):
        build("alexnet", weights=str(tmp_path / "text.pth"))
    with pytest.raises(SpecError, match="does not hold a state dict"):
        build("alexnet", weights=save([torch.zeros(1)], tmp_path / "list.pth"))


def test_dl_ray_train_refuses_torchvision_weights_for_other_data_in_one_line(tmp_path, capsys):
    weights = save({k: torch.zeros(s) for k, s in torchvision_resnet18_keys().items()}, tmp_path / "r18.pth")
    job = write_job(tmp_path, "ft", model={"name": "resnet", "size": "imagenet", "weights": weights},
                    data={"name": "mnist5k"})
    assert main(["train", str(job)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "conv1.weight has shape (64, 3, 7, 7) in the file, (64, 1, 7, 7) in the model" in err
    assert not (tmp_path / "runs").exists()


def test_an_unknown_depth_lists_the_allowed_ones():
    job = {"name": "j", "data": {"name": "mnist5k"}}
    with pytest.raises(SpecError, match=r"^model.depth: Input should be 18, 34, 50, 101 or 152 \(got 20\)$"):
        parse_spec({**job, "model": {"name": "resnet", "depth": 20}})
    with pytest.raises(SpecError, match=r"^model.depth: Input should be 11, 13, 16 or 19 \(got 17\)$"):
        parse_spec({**job, "model": {"name": "vgg", "depth": 17}})


@pytest.mark.parametrize("name, least", [("alexnet", 63), ("vgg", 32), ("googlenet", 15), ("resnet", 1)])
def test_too_small_an_input_names_the_smallest_size_and_that_size_runs(name, least):
    if least > 1:
        says = f"model.name={name} \\(size: imagenet\\) needs images of at least {least}x{least}, got"
        with pytest.raises(ValueError, match=says):
            on_meta(name, ModelIO((3, least - 1, least - 1), 1000, "multiclass"), size="imagenet")
    model = on_meta(name, ModelIO((3, least, least), 1000, "multiclass"), size="imagenet").eval()
    assert model(torch.zeros(1, 3, least, least, device="meta")).shape == (1, 1000)
    if least > 1:  # and torch's own layers agree: one pixel less and some layer has no output
        with pytest.raises(RuntimeError):
            model(torch.zeros(1, 3, least - 1, least - 1, device="meta"))
    with pytest.raises(ValueError, match="needs images \\(C,H,W\\)"):
        on_meta(name, ModelIO((20,), 2, "multiclass"))


def test_the_small_googlenet_names_its_smallest_input_which_is_where_its_pooling_stops_fitting():
    model = build("googlenet", ModelIO((1, 4, 4), 10, "multiclass")).eval()
    assert model(torch.zeros(2, 1, 4, 4)).shape == (2, 10)
    with pytest.raises(RuntimeError, match="Output size is too small"):
        model(torch.zeros(2, 1, 3, 3))
    with pytest.raises(ValueError, match=r"model.name=googlenet \(size: small\) needs images of at least 4x4, got 3x3"):
        build("googlenet", ModelIO((1, 3, 3), 10, "multiclass"))


def test_the_1x1_reductions_cut_an_inception_modules_cost():
    spec = ModuleSpec(64, 96, 128, 16, 32, 32)  # inception3a on 192 x 28 x 28
    reduced = module_cost(InceptionModule(192, spec), 192, 28)
    naive = module_cost(InceptionModule(192, spec, reduce=False), 192, 28)
    assert reduced[0] == 163_696  # 64*192 + 96*192 + 128*96*9 + 16*192 + 32*16*25 + 32*192 weights, plus biases
    assert reduced[1] == 28 * 28 * (64 * 192 + 96 * 192 + 128 * 96 * 9 + 16 * 192 + 32 * 16 * 25 + 32 * 192)
    assert naive[1] > 2 * reduced[1] and naive[0] > 2 * reduced[0]
    # The course's example, the 5x5 branch alone: 120 million multiply-adds, 12.4 million through 16 channels
    assert module_cost(InceptionModule(192, spec, reduce=False).branch3, 192, 28)[1] == 28 * 28 * 32 * 5 * 5 * 192 == 120_422_400
    assert module_cost(InceptionModule(192, spec).branch3, 192, 28)[1] == 12_443_648


# ---------------------------------------------------------------- small-input variants

SMALL = [("alexnet", {}), ("vgg", {"depth": 11}), ("vgg", {"depth": 16, "batch_norm": True}), ("resnet", {}),
         ("resnet", {"depth": 50, "width": 4}), ("googlenet", {}), ("googlenet", {"variant": "torchvision", "width": 8})]


@pytest.mark.parametrize("name, fields", SMALL)
@pytest.mark.parametrize("channels_last", [False, True])
def test_small_variants_learn_on_mnist_sized_images(name, fields, channels_last, one_torch_thread):
    torch.manual_seed(0)
    model = build(name, **fields)
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8) % 10
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(3):  # the same batch: a working network fits it
        loss = model.loss(model(x), (x, y))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert losses[-1] < losses[0]


def test_small_resnet_blocks_add_their_input_and_project_when_the_shape_changes():
    model = build("resnet")
    first, changing = model.layer1[0], model.layer2[0]
    assert first.downsample is None
    assert changing.downsample[0].stride == (2, 2) and changing.downsample[0].kernel_size == (1, 1)
    first.eval()
    with torch.no_grad():
        for block in (first, changing.eval()):
            block.bn2.weight.zero_()
            block.bn2.bias.zero_()  # z[l+2] = 0: the block passes g(a[l]) on, projected where the shape changes
        a = torch.randn(2, 16, 7, 7)
        torch.testing.assert_close(first(a), torch.relu(a))
        torch.testing.assert_close(changing(a), torch.relu(changing.downsample(a)))
        assert changing(a).shape == (2, 32, 4, 4)


@pytest.mark.slow  # three short epochs of the small ResNet through dl-ray train, ~30 s on 2 cores
def test_small_resnet_learns_mnist_through_the_generic_loop(tmp_path):
    job = write_job(tmp_path, "resnet", model={"name": "resnet", "width": 8},
                    data={"name": "mnist5k", "limit": 2500}, optimizer={"name": "adam", "lr": 0.002},
                    training={"epochs": 3, "batch_size": 32})
    assert main(["train", str(job)]) == 0
    final = json.loads((tmp_path / "runs" / "resnet" / "summary.json").read_text())["final"]
    assert final["test/accuracy"] >= 0.93, final
