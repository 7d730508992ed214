"""Siamese networks: the triplet loss and its miners against pytorch-metric-learning, the hard pair sampling, the
P x K batches, verification / recognition helpers, the LFW and Omniglot loaders, bad input, and a short real run."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dl_ray.cli import main
from dl_ray.data.pairs import class_batches, read_lfw_pairs
from dl_ray.errors import SpecError
from dl_ray.eval_siamese import UNKNOWN, Gallery, choose_threshold, one_shot, pick_one_per_class, verification
from dl_ray.models import metric_losses as ml
from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("one_torch_thread")
JOB = ROOT / "jobs/siamese/oneshot_triplet.yaml"


def batch(n: int = 48, classes: int = 6, dim: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, dim, generator=g), dim=1), torch.arange(n) % classes


def ours(emb, labels, miner, margin):
    ids = torch.arange(len(emb))
    dist = ml.squared_distances(emb, emb)
    total, count = ml.triplet_terms(dist, labels, labels, ids, miner, margin)
    return total / count.clamp(min=1), ml.mine(dist, labels, labels, ids, miner, margin)


def reference_miner(miner: str, margin: float):
    from pytorch_metric_learning import distances, miners

    d = distances.LpDistance(power=2)
    if miner == "batch_hard":
        return miners.BatchHardMiner(distance=d)
    return miners.TripletMarginMiner(margin=margin, type_of_triplets=miner, distance=d)


@pytest.mark.parametrize("miner", ml.MINERS)
@pytest.mark.parametrize("margin", [0.1, 0.5])
def test_the_triplet_loss_and_miners_equal_pytorch_metric_learning(miner, margin):
    from pytorch_metric_learning import distances, losses

    emb, labels = batch()
    theirs_miner = reference_miner(miner, margin)
    triplets = theirs_miner(emb, labels)
    theirs = losses.TripletMarginLoss(margin=margin, distance=distances.LpDistance(power=2))(emb, labels, triplets)
    loss, mined = ours(emb, labels, miner, margin)
    assert len(mined[0]) > 0
    assert sorted(zip(*(t.tolist() for t in mined))) == sorted(zip(*(t.tolist() for t in triplets)))
    assert loss.item() == pytest.approx(theirs.item(), abs=1e-5)


def test_batch_all_without_a_miner_is_their_loss_over_every_triplet():
    from pytorch_metric_learning import distances, losses

    emb, labels = batch(seed=1)
    theirs = losses.TripletMarginLoss(margin=0.2, distance=distances.LpDistance(power=2))(emb, labels)
    assert ours(emb, labels, "all", 0.2)[0].item() == pytest.approx(theirs.item(), abs=1e-5)


def test_the_loss_is_the_course_formula_by_brute_force():
    emb, labels = batch(n=12, classes=3, seed=2)
    d = torch.cdist(emb, emb).pow(2)
    values = [max(d[a, p] - d[a, n] + 0.3, 0) for a, p, n in itertools.product(range(12), repeat=3)
              if a != p and labels[a] == labels[p] and labels[a] != labels[n]]
    active = [v for v in values if v > 0]
    assert ours(emb, labels, "all", 0.3)[0].item() == pytest.approx(float(sum(active) / len(active)), abs=1e-5)


@pytest.mark.parametrize("temperature", [0.05, 0.5])
@pytest.mark.parametrize("classes", [24, 6])  # an image and its copy (the view term), or several positives each
def test_ntxent_equals_pytorch_metric_learning(temperature, classes):
    from pytorch_metric_learning import losses

    emb, ids = batch(classes=classes, seed=4)
    total, count = ml.ntxent_terms(emb, ids, temperature)
    theirs = losses.NTXentLoss(temperature=temperature)(emb, ids)
    assert count.item() == sum(int((ids == i).sum()) * int((ids == i).sum() - 1) for i in ids.unique())
    assert (total / count).item() == pytest.approx(theirs.item(), rel=1e-5)


def test_each_anchor_gets_as_many_hardest_negatives_as_positives():
    emb, labels = batch(n=24, classes=4, seed=3)
    dist = ml.squared_distances(emb, emb)
    a, j, same = ml.hard_pairs(dist, labels, labels, torch.arange(24))
    for anchor in range(24):
        mine = a == anchor
        positives, negatives = j[mine & (same == 1)], j[mine & (same == 0)]
        assert len(positives) == len(negatives) == 5
        others = [k for k in range(24) if labels[k] != labels[anchor]]
        closest = sorted(others, key=lambda k: dist[anchor, k].item())[:5]
        assert sorted(negatives.tolist()) == sorted(closest)


def test_class_batches_hold_k_images_of_a_class_and_split_ranks():
    labels = torch.arange(70) % 7
    rows = class_batches(labels, 16, 4, seed=5)
    groups = labels[rows].view(len(rows), -1, 4)
    assert (groups == groups[:, :, :1]).all()  # K images of one class per group
    assert set(rows.flatten().tolist()) == set(range(70))  # every image in the epoch
    ranks = [class_batches(labels, 8, 4, seed=5, rank=r, world=2) for r in (0, 1)]
    assert ranks[0].shape == ranks[1].shape
    assert torch.equal(torch.stack(ranks, 1).flatten(), rows.flatten())  # the two workers deal one epoch
    assert torch.equal(class_batches(labels, 16, 4, seed=5), rows)
    assert not torch.equal(class_batches(labels, 16, 4, seed=6), rows)


def test_distort_is_the_identity_when_off_and_each_part_moves_the_strokes():
    from dl_ray.models.siamese import SiameseConfig, distort

    x = torch.zeros(4, 1, 28, 28) - 0.4
    x[:, :, 6:22, 12:16] = 2.8  # a bar on a background that is not 0 (standardised pixels)
    off = SiameseConfig(name="siamese", view_shift=0, view_rotation=0)
    assert torch.allclose(distort(x, off), x, atol=1e-5)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    for part in ({"view_scale": 0.3}, {"view_shear": 0.5}, {"view_elastic": 0.1}):
        moved = distort(x, off.model_copy(update=part), g())
        assert (moved - x).abs().amax() > 1 and moved.amin() >= -0.4 - 1e-5
    thick = distort(x, off.model_copy(update={"view_thickness": 1.0}), g())
    ink = lambda t: (t + 0.4).sum((1, 2, 3))  # noqa: E731
    assert ((ink(thick) - ink(x)).abs() > 10).all()  # every copy thicker or thinner


def test_the_projection_head_feeds_only_the_view_term_and_keeps_the_embedding():
    from contextlib import nullcontext
    from types import SimpleNamespace

    from dl_ray.models.base import ModelIO
    from dl_ray.models.siamese import Siamese, SiameseConfig, distort

    cfg = SiameseConfig(name="siamese", embedding_dim=16, view_weight=2.0, view_objective="ntxent", temperature=0.1,
                        projection_dim=24, backbone={"channels": (4, 8), "hidden": (32, 16)})
    torch.manual_seed(0)
    model = Siamese(cfg, ModelIO((1, 28, 28), 10, "multiclass"))
    x, labels = torch.randn(12, 1, 28, 28), torch.arange(12) % 3
    emb = model(x)
    assert emb.shape == (12, 16) and torch.allclose(emb.norm(dim=1), torch.ones(12))  # f(x), before the head
    assert set(model.networks()) == {"embed", "project"}
    torch.manual_seed(1)
    loss = model.batch_loss(x, labels, SimpleNamespace(nets=model.networks(), autocast=nullcontext()))
    torch.manual_seed(1)  # the same distorted copies, by hand: triplet loss on f, NT-Xent on g(f)
    copies = model(distort(x, cfg))
    total, count = ml.triplet_terms(ml.squared_distances(emb, emb), labels, labels, torch.arange(12), cfg.miner, cfg.margin)
    z = F.normalize(model.project(torch.cat([emb, copies])), dim=1)
    view_total, view_count = ml.ntxent_terms(z, torch.arange(12).repeat(2), cfg.temperature)
    assert loss.item() == pytest.approx((total / count + 2.0 * view_total / view_count).item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.project.parameters())


def test_threshold_and_verification_against_brute_force():
    rng = np.random.default_rng(0)
    same = rng.random(300) < 0.2
    dist = np.where(same, rng.normal(1, 0.4, 300), rng.normal(2, 0.4, 300))
    tau = choose_threshold(dist, same)
    balanced = lambda t: ((dist <= t)[same].mean() + (dist > t)[~same].mean()) / 2  # noqa: E731
    assert balanced(tau) == pytest.approx(max(balanced(t) for t in dist))
    report = verification(dist, same, tau)
    auc = np.mean([a < b for a in dist[same] for b in dist[~same]])
    assert report["auc"] == pytest.approx(auc) and report["balanced_accuracy"] == pytest.approx(balanced(tau))
    assert 0 < report["eer"] < 0.2


def test_a_gallery_recognises_says_unknown_and_adds_a_person_by_one_embedding():
    gallery = Gallery(ml.squared_distances, threshold=0.5)
    e = torch.eye(3)
    gallery.enrol(e[0], 10)
    gallery.enrol(e[1], 11)
    queries = F.normalize(e + 0.1, dim=1)
    assert gallery.recognise(queries).tolist() == [10, 11, UNKNOWN]
    gallery.enrol(e[2], 12)
    assert gallery.recognise(queries).tolist() == [10, 11, 12]


def test_one_shot_is_perfect_on_separated_classes_and_a_missing_class_is_one_line():
    labels = torch.arange(30) % 3
    d = (labels[:, None] != labels[None, :]).float() + 0.01 * torch.rand(30, 30)
    assert one_shot(d, labels, [0, 1, 2], galleries=5) == 1.0
    with pytest.raises(SpecError, match=r"^gallery: class 5 has 0 image\(s\) .*; allowed classes: 0, 1, 2$"):
        pick_one_per_class(labels, [0, 5], torch.Generator())


def run_cli(capsys, *args) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err
    assert err.count("\n") <= 1, err
    return code, err


@pytest.mark.parametrize("override, says", [
    ("model.margin=0", "model.margin: Input should be greater than 0 (got 0)"),
    ("model.margin=-0.2", "model.margin: Input should be greater than 0"),
    ("model.miner=hardest", "model.miner: Input should be 'all', 'hard', 'semihard' or 'batch_hard' (got 'hardest')"),
    ("data.train_classes=[7]", "data.train_classes: give at least two distinct digits among 0-9"),
    ("model.view_objective=simclr", "model.view_objective: Input should be 'triplet' or 'ntxent' (got 'simclr')"),
    ("model.temperature=0", "model.temperature: Input should be greater than 0 (got 0)"),
    ("model.projection_dim=-1", "model.projection_dim: Input should be greater than or equal to 0 (got -1)"),
    ("model.view_weight=0 model.projection_dim=32",
     "model.projection_dim: the projection head serves only the NT-Xent view term: set view_weight > 0 and"),
    ("model.view_objective=triplet model.projection_dim=32", "(got 3.0 and triplet), or projection_dim: 0 (got 32)"),
])
def test_bad_siamese_fields_are_one_line_and_write_nothing(capsys, tmp_path, override, says):
    sets = [arg for item in override.split() for arg in ("--set", item)]
    code, err = run_cli(capsys, "train", str(JOB), *sets, "--set", f"storage.path={tmp_path}")
    assert code == 2 and says in err, err
    assert not list(tmp_path.iterdir())


def write_png(path, value: int, size: int = 20) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path)


def test_lfw_pairs_are_read_in_their_format(tmp_path):
    for name, n in (("Ann_Lee", 2), ("Bo_Li", 1)):
        for i in range(1, n + 1):
            write_png(tmp_path / "lfw" / name / f"{name}_{i:04d}.jpg", 40 * i)
    (tmp_path / "pairs.txt").write_text("1\t1\nAnn_Lee\t1\t2\nAnn_Lee\t2\tBo_Li\t1\n")
    pairs = read_lfw_pairs(tmp_path / "pairs.txt", tmp_path / "lfw", size=16)
    assert pairs.x1.shape == (2, 1, 16, 16) and pairs.same.tolist() == [True, False] and pairs.fold.tolist() == [0, 0]
    assert pairs.x1[0].mean().item() == pytest.approx(40 / 255, abs=1e-3)
    assert pairs.x2[0].mean().item() == pytest.approx(80 / 255, abs=1e-3)
    (tmp_path / "pairs.txt").write_text("1\t1\nAnn_Lee\t1\t3\n")
    with pytest.raises(SpecError, match="pairs: .* line 2: no such image: .*Ann_Lee_0003.jpg"):
        read_lfw_pairs(tmp_path / "pairs.txt", tmp_path / "lfw")


def test_omniglot_folders_make_background_and_evaluation_splits(tmp_path):
    from dl_ray.data import build_data
    from dl_ray.spec import parse_named
    from dl_ray.registry import DATASETS

    for part, alphabet in (("images_background", "Latin"), ("images_evaluation", "Tengwar")):
        for c in range(3):
            for i in range(4):
                write_png(tmp_path / part / alphabet / f"character{c + 1:02d}" / f"{c}_{i:02d}.png", 255 - 50 * c)
    cfg = parse_named({"name": "omniglot", "path": str(tmp_path), "size": 14, "val_fraction": 0.25}, "data", DATASETS)
    data = build_data(cfg)
    assert len(data.train) + len(data.val) == 12 and len(data.val) == 3 and len(data.test) == 12
    assert data.input_shape == (1, 14, 14) and data.num_outputs == 6
    assert set(data.test.tensors[1].tolist()) == {3, 4, 5}  # new characters, new classes
    x, y = data.train.tensors
    assert torch.allclose(x[y == 1].mean(), torch.tensor(50 / 255), atol=1e-3)  # inverted: ink is 1
    (tmp_path / "images_background" / "Latin" / "character01" / "bad.png").write_text("not an image")
    cfg = parse_named({"name": "omniglot", "path": str(tmp_path), "size": 15}, "data", DATASETS)
    with pytest.raises(SpecError, match=r"data.path: .*bad.png is not an image"):
        build_data(cfg)


@pytest.mark.slow
def test_a_short_run_beats_raw_pixels_on_unseen_digits_and_eval_reports(tmp_path, capsys):
    code = main(["train", str(JOB), "--set", "training.epochs=3", "--set", f"storage.path={tmp_path}",
                 "--set", "tracking.wandb=disabled", "--set", "regularization.early_stopping.patience=null"])
    assert code == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "oneshot_triplet")]) == 0
    out = capsys.readouterr().out
    assert "verification (test," in out and "recognition (gallery: 1 image of each of 7 trained classes)" in out
    report = json.loads((tmp_path / "oneshot_triplet" / "eval_test.json").read_text())
    ours, pixels = report["one_shot"]["siamese"], report["one_shot"]["raw pixels"]
    assert ours["10-way"] > pixels["10-way"] + 0.15 and ours["3-way unseen"] > pixels["3-way unseen"]
    assert report["verification"]["test"]["auc"] > 0.9
    assert all((tmp_path / "oneshot_triplet" / p).is_file() for p in ("roc.png", "tsne.png"))
