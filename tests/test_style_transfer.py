"""Neural style transfer (kind style_transfer, dl_ray/style): the course's costs against hand computation, the
Gram matrix's properties, VGG-19 in torchvision's layout and its weights file, J_style falling under the pixel
optimisers, a real run's files, and bad input (one line naming the field, exit 2, nothing written)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from dl_ray.cli import main
from dl_ray.models.style_features import LAYER_INDEX, VGG19Features
from dl_ray.style import costs
from dl_ray.style.run import initial_image, optimise, prepare
from dl_ray.style.spec import parse_style
from tests.conftest import ROOT

A = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]])  # nC = 2, nH = 1, nW = 2


def test_content_cost_is_the_course_formula_by_hand():
    # sum (a_C - a_G)^2 = 1 + 4 + 9 + 16 = 30; 4 nH nW nC = 4 * 1 * 2 * 2 = 16
    assert costs.content_cost(A, torch.zeros_like(A)).item() == pytest.approx(30 / 16)
    g = torch.tensor([[[0.0, 2.0]], [[3.0, 2.0]]])  # differences 1, 0, 0, 2: sum 5
    assert costs.content_cost(A[None], g[None]).item() == pytest.approx(5 / 16)  # a batch of one is accepted


def test_gram_matrix_and_layer_style_cost_by_hand():
    # A unrolled: [[1, 2], [3, 4]]; A A^T = [[1+4, 3+8], [3+8, 9+16]]
    assert costs.gram_matrix(A).tolist() == [[5.0, 11.0], [11.0, 25.0]]
    # sum (G_S - 0)^2 = 25 + 121 + 121 + 625 = 892; (2 nH nW nC)^2 = (2 * 1 * 2 * 2)^2 = 64
    assert costs.layer_style_cost(A, torch.zeros_like(A)).item() == pytest.approx(892 / 64)
    b = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # G = I: differences 4, 11, 11, 24
    assert costs.layer_style_cost(A, b).item() == pytest.approx((16 + 121 + 121 + 576) / 64)


def test_style_and_total_costs_weigh_the_layers_by_lambda_and_alpha_beta():
    torch.manual_seed(0)
    s = {"x": torch.rand(3, 4, 5), "y": torch.rand(6, 2, 2)}
    g = {"x": torch.rand(3, 4, 5), "y": torch.rand(6, 2, 2)}
    grams = {k: costs.gram_matrix(v) for k, v in s.items()}
    by_layer = {}
    for k in s:  # brute force in NumPy: every entry of both Gram matrices, loops over the channel pairs
        a_s, a_g = s[k].reshape(s[k].shape[0], -1).double().numpy(), g[k].reshape(g[k].shape[0], -1).double().numpy()
        n_c, n_hw = a_s.shape
        total = sum((a_s[i] @ a_s[j] - a_g[i] @ a_g[j]) ** 2 for i in range(n_c) for j in range(n_c))
        by_layer[k] = total / (2 * n_hw * n_c) ** 2
    j_style = costs.style_cost(grams, g, {"x": 0.3, "y": 0.7})
    assert j_style.item() == pytest.approx(0.3 * by_layer["x"] + 0.7 * by_layer["y"], rel=1e-5)
    assert costs.total_cost(torch.tensor(2.0), j_style, 10, 40).item() == pytest.approx(20 + 40 * j_style.item(), rel=1e-6)


def test_the_gram_matrix_is_symmetric_and_positive_semidefinite():
    torch.manual_seed(1)
    for shape in [(8, 5, 7), (16, 3, 3), (4, 10, 1)]:
        gram = costs.gram_matrix(torch.randn(shape).double())
        assert torch.allclose(gram, gram.T, rtol=1e-12, atol=1e-12)  # A A^T, up to the GEMM's rounding
        assert torch.linalg.eigvalsh(gram).min().item() >= -1e-9 * gram.abs().max().item()


# ---------------------------------------------------------------- VGG-19 in torchvision's layout

CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256),
         (16, 256, 256), (19, 256, 512), (21, 512, 512), (23, 512, 512), (25, 512, 512), (28, 512, 512),
         (30, 512, 512), (32, 512, 512), (34, 512, 512)]  # torchvision's vgg19 features, written out


def torchvision_vgg19_features() -> dict[str, tuple[int, ...]]:
    keys = {}
    for i, c_in, c_out in CONVS:
        keys[f"features.{i}.weight"], keys[f"features.{i}.bias"] = (c_out, c_in, 3, 3), (c_out,)
    return keys


@pytest.fixture(scope="module")
def vgg():
    return VGG19Features(seed=1)


def test_features_have_torchvision_vgg19_keys_and_gatys_layer_names(vgg):
    assert {k: tuple(v.shape) for k, v in vgg.state_dict().items()} == torchvision_vgg19_features()
    assert [LAYER_INDEX[n] for n in ("conv1_1", "relu1_1", "conv1_2", "pool1", "conv2_1", "conv3_1", "conv4_1",
                                     "conv4_2", "relu4_2", "pool4", "conv5_1", "conv5_4", "pool5")] == \
           [0, 1, 2, 4, 5, 10, 19, 21, 22, 27, 28, 34, 36]
    out = vgg(torch.rand(1, 3, 32, 32), ["conv4_2", "relu4_2", "conv1_1"])
    assert out["conv4_2"].shape == (1, 512, 4, 4) and out["conv1_1"].shape == (1, 64, 32, 32)
    assert torch.equal(out["relu4_2"], out["conv4_2"].clamp(min=0))  # the ReLU did not overwrite its input


def test_a_weights_file_in_torchvision_layout_loads_and_its_classifier_is_skipped(vgg, tmp_path):
    path = tmp_path / "vgg19.pth"
    torch.save(vgg.state_dict() | {"classifier.6.bias": torch.zeros(1000)}, path)
    loaded = VGG19Features(weights=path, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), vgg.state_dict().values()))
    assert not torch.equal(VGG19Features(seed=0).state_dict()["features.0.weight"], vgg.state_dict()["features.0.weight"])


# ---------------------------------------------------------------- optimisation


def tiny(tmp_path, **sections) -> dict:
    job = {"kind": "style_transfer", "name": "tiny", "content": "skimage:chelsea", "style": "skimage:immunohistochemistry",
           "size": 48, "tracking": {"wandb": "disabled"}, "storage": {"path": str(tmp_path / "runs")},
           "training": {"steps": 4, "save_every": 2}}
    for key, value in sections.items():
        job[key] = {**job[key], **value} if isinstance(job.get(key), dict) else value
    return job


@pytest.mark.parametrize("optimizer, steps", [({"name": "lbfgs", "lr": 1.0}, 10), ({"name": "adam", "lr": 0.05}, 20)])
def test_with_content_weight_0_j_style_falls_tenfold(tmp_path, one_torch_thread, optimizer, steps):
    spec = parse_style(tiny(tmp_path, size=32, costs={"alpha": 0.0, "beta": 1.0}, optimizer=optimizer,
                            training={"steps": steps, "init": "noise"}))
    problem = prepare(spec)
    seen = []
    final = optimise(problem, initial_image(problem), steps, lambda step, v: seen.append(v["j_style"]))
    assert len(seen) == steps + 1 and final["j_style"] == seen[-1]
    assert seen[0] / final["j_style"] >= 10, (seen[0], final["j_style"])


def test_a_short_run_writes_its_pictures_curves_and_summary_and_reports_again(tmp_path, capsys, one_torch_thread):
    job = tmp_path / "tiny.yaml"
    job.write_text(yaml.safe_dump(tiny(tmp_path, training={"progress_every_s": 1000})))
    assert main(["train", str(job)]) == 0
    out = capsys.readouterr().out
    assert "step 0/4" in out and "step 4/4" in out and out.count("\nstep ") == 2  # start and end; no line in between
    run = tmp_path / "runs" / "tiny"
    for name in ("result.png", "content_style_result.png", "curves.png", "metrics.csv", "spec.yaml",
                 "generated/step_0000.png", "generated/step_0002.png", "generated/step_0004.png"):
        assert (run / name).is_file(), name
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,j,j_content,j_style,time_s" and len(rows) == 1 + 5
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps_run"] == 4 and summary["size"] == [32, 48]
    assert summary["final"]["j_style"] < summary["start"]["j_style"]
    from PIL import Image

    assert Image.open(run / "result.png").size == (48, 32)
    before = (run / "metrics.csv").stat().st_mtime_ns
    assert main(["train", str(job)]) == 0  # finished: reports again, optimises nothing
    assert "finished before" in capsys.readouterr().out and (run / "metrics.csv").stat().st_mtime_ns == before
    assert main(["train", str(job), "--set", "costs.beta=5"]) == 2
    assert "storage.name:" in capsys.readouterr().err


# ---------------------------------------------------------------- bad input


def bad_run(capsys, tmp_path, job: dict, *overrides: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(job))
    code = main(["train", str(path), *[a for o in overrides for a in ("--set", o)]])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert not (tmp_path / "runs").exists()
    return err


@pytest.mark.parametrize("override, says", [
    ("costs.style_layers={conv6_1: 1.0}", "costs.style_layers: unknown layer 'conv6_1'; allowed: VGG-19's conv1_1, relu1_1"),
    ("costs.content_layer=conv4_9", "costs.content_layer: unknown layer 'conv4_9'; allowed: VGG-19's conv1_1"),
    ("costs.alpha=-1", "costs.alpha: Input should be greater than or equal to 0 (got -1)"),
    ("costs.beta=-0.5", "costs.beta: Input should be greater than or equal to 0 (got -0.5)"),
    ("content=skimage:mona_lisa", "content: unknown scikit-image image 'mona_lisa'; allowed: skimage:astronaut"),
    ("style=nowhere/style.jpg", "style: no such image file: nowhere/style.jpg; allowed: an image file path"),
    ("optimizer.name=sgd", "optimizer.name: Input should be 'adam' or 'lbfgs' (got 'sgd')"),
    pytest.param("scaling.use_gpu=true", "scaling.use_gpu: true, but torch sees no CUDA GPU on this machine",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
])
def test_bad_fields_are_one_line_naming_the_field_and_write_nothing(capsys, tmp_path, override, says):
    assert says in bad_run(capsys, tmp_path, tiny(tmp_path), override)


def test_a_file_that_is_not_an_image_is_one_line(capsys, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    err = bad_run(capsys, tmp_path, tiny(tmp_path, content=str(text)))
    assert f"content: {text} is not an image PIL can read" in err


def test_a_weights_file_that_does_not_fit_names_the_first_mismatch(capsys, tmp_path, vgg):
    state = vgg.state_dict()
    wrong_key = tmp_path / "renamed.pth"
    torch.save({k.replace("features.0.", "features.00."): v for k, v in state.items()}, wrong_key)
    err = bad_run(capsys, tmp_path, tiny(tmp_path, features={"weights": str(wrong_key)}))
    assert "features.weights:" in err and "missing key features.0.weight" in err
    wrong_shape = tmp_path / "vgg16ish.pth"
    torch.save(state | {"features.21.weight": torch.zeros(256, 512, 3, 3)}, wrong_shape)
    err = bad_run(capsys, tmp_path, tiny(tmp_path, features={"weights": str(wrong_shape)}))
    assert "features.21.weight has shape (256, 512, 3, 3) in the file, (512, 512, 3, 3) in the model" in err


def test_the_shipped_job_is_valid():
    spec = parse_style(yaml.safe_load((ROOT / "jobs/style_transfer.yaml").read_text()))
    assert spec.features.weights is None and spec.costs.content_layer == "relu4_2"
    assert np.isclose(sum(spec.costs.style_layers.values()), 1.0)


def test_every_kind_with_its_own_trials_has_what_the_sweep_calls():
    from dl_ray import kinds
    from dl_ray.tune.spec import SWEPT_KINDS, SweptKind, swept_kind

    wanted = {n for n in vars(SweptKind) if not n.startswith("_")} | set(SweptKind.__annotations__)
    assert {"parse", "check", "trial", "subject", "write_outputs", "SWEEPABLE"} <= wanted
    for kind in SWEPT_KINDS:
        own = swept_kind(kind)
        assert kind in kinds.COMMANDS and not wanted - set(vars(own)), (kind, wanted - set(vars(own)))
        assert all(callable(getattr(own, n)) for n in wanted - {"SWEEPABLE"})
    assert swept_kind("supervised") is None and swept_kind(None) is None


# ---------------------------------------------------------------- slow: W&B, a Tune sweep


@pytest.mark.slow
def test_a_run_logs_its_costs_and_images_to_an_offline_wandb_run(tmp_path, one_torch_thread):
    from tests.wandb_records import history

    job = tmp_path / "tiny.yaml"
    job.write_text(yaml.safe_dump(tiny(tmp_path, tracking={"wandb": "offline"})))
    assert main(["train", str(job)]) == 0
    (run_file,) = (tmp_path / "runs" / "tiny" / "wandb").glob("offline-run-*/run-*.wandb")
    keys = {k for row in history(run_file) for k in row}
    images = {"images/step_0000", "images/step_0002", "images/step_0004", "images/content_style_result"}
    assert {"j", "j_content", "j_style"} | {f"{name}/_type" for name in images} <= keys  # an image is a nested record


@pytest.mark.slow
def test_a_beta_sweep_runs_one_optimisation_per_trial_and_writes_one_grid(tmp_path, capsys):
    import csv

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        code = main(["tune", str(ROOT / "jobs/sweeps/style_transfer_beta.yaml"), "--set", f"storage.path={tmp_path}",
                     "--set", "size=32", "--set", "training.steps=4", "--set", "tracking.wandb=disabled",
                     "--set", "tune.space.costs.beta={grid: [1.0, 1.0e+6]}"])
    finally:
        ray.shutdown()
    assert code == 0, capsys.readouterr().err
    folder = tmp_path / "style_transfer_beta"
    with (folder / "results.csv").open() as f:
        rows = sorted(csv.DictReader(f), key=lambda r: float(r["costs.beta"]))
    assert [r["status"] for r in rows] == ["completed", "completed"]
    low, high = (json.loads((folder / r["trial"] / "summary.json").read_text())["final"] for r in rows)
    assert float(rows[0]["j_content"]) == pytest.approx(low["j_content"])
    assert high["j_content"] > low["j_content"] and high["j_style"] < low["j_style"]  # more beta: more style, less content
    assert (folder / "grid.png").stat().st_size > 10_000
    best = yaml.safe_load((folder / "best.yaml").read_text())
    assert best["kind"] == "style_transfer" and best["costs"]["beta"] == 1.0  # ranked by j_content: the least style
