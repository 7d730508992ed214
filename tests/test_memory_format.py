"""``training.memory_format: channels_last`` and ``training.precision: bf16`` (autocast) as job options."""
from __future__ import annotations

import csv

import pytest
import torch

from dl_ray.cli import main
from dl_ray.train import checkpoints
from dl_ray.train.loop import to_device
from tests.conftest import write_job


def train_lenet(tmp_path, name: str, **training) -> tuple[list[float], dict[str, torch.Tensor]]:
    """A short LeNet-5 run in local mode: its train loss per epoch and its latest checkpoint's weights."""
    job = write_job(tmp_path, name, model={"name": "lenet5"}, data={"name": "mnist5k", "limit": 400},
                    optimizer={"lr": 0.005}, training={"epochs": 3, "batch_size": 32, **training})
    assert main(["train", str(job)]) == 0
    run = tmp_path / "runs" / name
    with (run / "metrics.csv").open() as f:
        losses = [float(row["train/loss"]) for row in csv.DictReader(f)]
    return losses, checkpoints.read(checkpoints.latest(run))["model"]


def test_channels_last_and_bf16_runs_learn_with_nhwc_weights(tmp_path, one_torch_thread):
    fp32, fp32_weights = train_lenet(tmp_path, "nhwc", memory_format="channels_last")
    bf16, bf16_weights = train_lenet(tmp_path, "nhwc_bf16", memory_format="channels_last", precision="bf16")
    for losses in (fp32, bf16):
        assert losses[-1] < 0.8 * losses[0], losses
    for weights in (fp32_weights, bf16_weights):
        conv2 = weights["features.4.weight"]  # 16x6x5x5: its two layouts differ (conv1's single input channel does not)
        assert conv2.is_contiguous(memory_format=torch.channels_last) and not conv2.is_contiguous()
        assert weights["classifier.0.weight"].is_contiguous()  # 2-D weights keep their layout
        assert all(w.dtype == torch.float32 for w in weights.values())  # autocast leaves the master weights fp32
    assert fp32 != bf16  # same seed and batches: only bfloat16 arithmetic makes them differ


def test_image_batches_move_in_the_requested_layout():
    x, y = torch.randn(4, 3, 8, 8), torch.arange(4)
    moved_x, moved_y = to_device((x, y), torch.device("cpu"), torch.channels_last)
    assert moved_x.is_contiguous(memory_format=torch.channels_last) and not moved_x.is_contiguous()
    assert torch.equal(moved_x, x) and moved_y is y
    assert to_device(x, torch.device("cpu")).is_contiguous()  # the default keeps the layout


@pytest.mark.parametrize(("field", "value", "allowed"), [
    ("training.memory_format", "nhwc", "'contiguous' or 'channels_last'"),
    ("training.precision", "fp16", "'fp32' or 'bf16'"),
])
def test_a_bad_value_is_one_line_and_exit_2(tmp_path, capsys, field, value, allowed):
    job = write_job(tmp_path, "bad", model={"name": "lenet5"}, data={"name": "mnist5k"})
    assert main(["train", str(job), "--set", f"{field}={value}"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(f"error: {field}: ") and allowed in err
    assert not (tmp_path / "runs").exists()
