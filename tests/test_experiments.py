"""Experiments (``tune.compare: true``): the comparison table and figure, and the counts behind the 1x1 claim."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console

from dl_ray.layer_summary import summarize
from dl_ray.experiments import write_comparison
from dl_ray.models.inception import InceptionModule, ModuleSpec
from dl_ray.tune.spec import load_sweep
from tests.conftest import ROOT

EXPERIMENTS = ROOT / "jobs" / "experiments"


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("reduce, params, macs", [
    # 1x1: 192*64 | 1x1 192*96, 3x3 96*128*9 | 1x1 192*16, 5x5 16*32*25 | pool, 1x1 192*32; weights + biases,
    # multiply-adds = 28*28 output pixels x the same weight counts
    (True, 12_288 + 64 + 18_432 + 96 + 110_592 + 128 + 3_072 + 16 + 12_800 + 32 + 6_144 + 32,
     784 * (12_288 + 18_432 + 110_592 + 3_072 + 12_800 + 6_144)),
    # no reductions: 1x1 192*64 | 3x3 192*128*9 | 5x5 192*32*25 | pool (no parameters, not counted)
    (False, 12_288 + 64 + 221_184 + 128 + 153_600 + 32, 784 * (12_288 + 221_184 + 153_600)),
])
def test_inception_module_counts_equal_the_hand_computed_ones(reduce, params, macs):
    module = InceptionModule(192, ModuleSpec(64, 96, 128, 16, 32, 32), reduce=reduce)  # the paper's inception (3a)
    summary = summarize(module, (torch.zeros(1, 192, 28, 28),))
    assert (summary.params, summary.macs) == (params, macs)


def test_the_course_5x5_example_costs_a_tenth_with_a_1x1_reduction():
    direct = summarize(torch.nn.Conv2d(192, 32, 5, padding=2), (torch.zeros(1, 192, 28, 28),))
    reduced = summarize(torch.nn.Sequential(torch.nn.Conv2d(192, 16, 1), torch.nn.Conv2d(16, 32, 5, padding=2)),
                        (torch.zeros(1, 192, 28, 28),))
    assert direct.macs == 28 * 28 * 32 * 5 * 5 * 192 == 120_422_400
    assert reduced.macs == 28 * 28 * 16 * 192 + 28 * 28 * 32 * 5 * 5 * 16 == 12_443_648


def fake_trial(folder: Path, name: str, train_acc: list[float], val_acc: list[float], final: dict[str, float]) -> None:
    """A trial folder as the loop leaves it: metrics.csv (one row per epoch) and summary.json."""
    (folder / name).mkdir(parents=True)
    lines = ["epoch,train/loss,train/accuracy,val/loss,val/accuracy"]
    lines += [f"{e},0.5,{t},0.5,{v}" for e, (t, v) in enumerate(zip(train_acc, val_acc), 1)]
    (folder / name / "metrics.csv").write_text("\n".join(lines) + "\n")
    (folder / name / "summary.json").write_text(json.dumps({"final": final}))


def test_comparison_averages_seeds_per_setting_and_counts_each_model(tmp_path):
    sweep_file = tmp_path / "compare.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "kind": "sweep", "name": "cmp", "model": {"name": "mlp", "hidden": [32]}, "data": {"name": "digits"},
        "training": {"epochs": 3}, "tracking": {"wandb": "disabled"}, "storage": {"path": str(tmp_path)},
        "tune": {"compare": True, "search": "grid", "metric": "val/accuracy",
                 "space": {"model.hidden": {"grid": [[16], [32]]}, "training.seed": {"grid": [0, 1]}}}}))
    sweep = load_sweep(sweep_file)
    rows = []
    for i, (hidden, seed, last) in enumerate([([32], 0, 0.9), ([32], 1, 0.8), ([16], 0, 0.7), ([16], 1, 0.6)]):
        name = f"cmp_{i:05d}"
        fake_trial(sweep.folder, name, [0.5, last], [0.5, last - 0.1],
                   {"val/accuracy": last - 0.1, "test/accuracy": 0.95 - 0.02 * seed - 0.1 * (hidden == [16])})
        rows.append({"trial": name, "status": "completed", "model.hidden": hidden, "training.seed": seed, "train_s": 2.0})
    rows.append({"trial": "cmp_00004", "status": "error", "model.hidden": [32], "training.seed": 2, "train_s": ""})

    paths = write_comparison(rows, sweep, Console(width=200))
    table = read_csv(paths[0])
    assert [r["model.hidden"] for r in table] == ["[16]", "[32]"]  # the sweep file's order, not the trials'
    small, big = table
    # digits are 8x8: 64 -> hidden -> 10, weights and biases; multiply-adds: the weights
    assert (int(big["params"]), int(big["macs"])) == (64 * 32 + 32 + 32 * 10 + 10, 64 * 32 + 32 * 10)
    assert (int(small["params"]), int(small["macs"])) == (64 * 16 + 16 + 16 * 10 + 10, 64 * 16 + 16 * 10)
    assert float(big["train_error_pct"]) == pytest.approx(15.0)  # last epoch: 1 - 0.9 and 1 - 0.8
    assert float(big["val_error_pct"]) == pytest.approx(25.0)
    assert float(big["test_error_pct"]) == pytest.approx(6.0) and float(small["test_error_pct"]) == pytest.approx(16.0)
    assert float(big["test_error_sd_pct"]) == pytest.approx(2 ** 0.5, abs=1e-3)  # stdev of 5 % and 7 %
    assert big["trials"] == "2"  # the failed trial is left out
    assert paths[1].stat().st_size > 10_000


SWEEPS = [p for p in sorted(EXPERIMENTS.glob("*.yaml")) if yaml.safe_load(p.read_text()).get("kind") == "sweep"]


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_experiment_is_a_comparison_sweep_with_its_measured_figures(path):
    sweep = load_sweep(path)
    assert sweep.tune.compare and sweep.tune.search == "grid" and sweep.tune.scheduler.name == "fifo"
    assert "# Measured" in path.read_text() and "(pending)" not in path.read_text()


@pytest.fixture
def ray_up():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_a_shortened_stride_experiment_leaves_its_table_and_figure(ray_up, tmp_path):
    from dl_ray.cli import main

    assert main(["tune", str(EXPERIMENTS / "stride_vs_pooling.yaml"), "--set", f"storage.path={tmp_path}",
                 "--set", "data.limit=2000", "--set", "training.epochs=3", "--set", "tracking.wandb=disabled",
                 "--set", "tune.space.training.seed={grid: [0]}"]) == 0
    folder = tmp_path / "stride_vs_pooling"
    pool, stride = read_csv(folder / "comparison.csv")
    assert (pool["model.downsample"], stride["model.downsample"]) == ("pool", "stride")
    assert pool["params"] == stride["params"]  # the same layers, only their stride differs
    # the convolutions' multiply-adds drop to a quarter (the dense layers' stay): 28x28 and 10x10 maps become 14x14 and 5x5
    conv_macs = 28 * 28 * 6 * 25 + 10 * 10 * 16 * 6 * 25
    assert int(pool["macs"]) - int(stride["macs"]) == conv_macs - conv_macs // 4
    assert all(float(r["test_error_pct"]) < 40 for r in (pool, stride))  # three short epochs already learn (chance: 90 %)
    assert (folder / "comparison.png").stat().st_size > 10_000
