"""Checkpoints and weights files are read with ``weights_only=True``: a pickle that would run code is refused in one line."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import yaml

from dl_ray.cli import main
from dl_ray.errors import SpecError
from dl_ray.train import checkpoints
from tests.conftest import write_job


class Planted:
    """What an attacker with write access to a shared run folder or bucket puts there: unpickling it runs a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def plant(path, marker) -> None:
    torch.save({"model": {"fc.weight": torch.zeros(2)}, "payload": Planted(marker)}, path)


def test_the_planted_file_does_run_code_when_unpickled_the_old_way(tmp_path):
    plant(tmp_path / "state.pt", tmp_path / "ran")
    torch.load(tmp_path / "state.pt", weights_only=False)  # what dl-ray did before: the file is live
    assert (tmp_path / "ran").exists()


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_a_planted_checkpoint_is_refused_on_resume_and_on_eval_and_never_unpickled(tmp_path, capsys):
    job = write_job(tmp_path, "shared", model={"name": "mlp", "hidden": [8]}, data={"name": "digits"},
                    training={"epochs": 1})
    assert main(["train", str(job)]) == 0
    state = tmp_path / "runs" / "shared" / "checkpoint_epoch_0001" / "state.pt"
    plant(state, tmp_path / "ran")
    capsys.readouterr()
    assert main(["train", str(job), "--set", "training.epochs=2"]) == 2
    assert f"error: {state}: refused: unpickling it would call posix.system, and dl-ray loads only checkpoints" \
           in one_error_line(capsys)
    assert main(["eval", str(tmp_path / "runs" / "shared")]) == 2
    assert "refused: unpickling it would call posix.system" in one_error_line(capsys)
    assert not (tmp_path / "ran").exists()
    assert [p.name for p in (tmp_path / "runs" / "shared").glob("checkpoint_epoch_*")] == ["checkpoint_epoch_0001"]


def test_a_planted_weights_file_is_refused_in_one_line(tmp_path, capsys):
    plant(tmp_path / "resnet18.pth", tmp_path / "ran")
    job = write_job(tmp_path, "ft", model={"name": "resnet", "weights": str(tmp_path / "resnet18.pth")},
                    data={"name": "mnist5k"})
    assert main(["train", str(job)]) == 2
    assert f"error: model.weights: {tmp_path / 'resnet18.pth'} is not a PyTorch state dict file (UnpicklingError)" \
           in one_error_line(capsys)
    assert not (tmp_path / "ran").exists() and not (tmp_path / "runs").exists()


def test_a_pickle_in_the_old_format_or_a_damaged_file_is_one_line(tmp_path):
    folder = tmp_path / "checkpoint_epoch_0001"
    folder.mkdir()
    torch.save({"payload": Planted(tmp_path / "ran")}, folder / "state.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(SpecError, match=r"state.pt: not a checkpoint \(not torch.save's zip format: .*\); delete .*"
                                        r"checkpoint_epoch_0001 or train afresh under another name"):
        checkpoints.read(folder)
    (folder / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SpecError, match="not a checkpoint"):
        checkpoints.read(folder)
    torch.save({"model": {"w": torch.arange(1000.0)}}, folder / "state.pt")
    blob = (folder / "state.pt").read_bytes()
    (folder / "state.pt").write_bytes(blob[: len(blob) // 2])  # a torn copy
    with pytest.raises(SpecError, match=r"state.pt: (cannot be read|not a checkpoint)"):
        checkpoints.read(folder)
    assert not (tmp_path / "ran").exists()


def test_a_checkpoint_holding_anything_but_tensors_and_plain_python_is_not_written(tmp_path):
    for bad in (np.float64(0.5), np.arange(3), yaml.YAMLObject()):
        with pytest.raises(TypeError, match="store tensors and plain Python only"):
            checkpoints.write(tmp_path / "c", {"state": {"best": bad}}, {}, {})
        assert not (tmp_path / "c" / "state.pt").exists()
    good = {"model": {"w": torch.ones(2)}, "state": {"best": 0.5, "best_epoch": 3, "stopped": False, "ref": None},
            "io": {"input_shape": (1, 8, 8), "meta": {"vocab": ["a", "b"]}}, "rng": torch.get_rng_state()}
    checkpoints.write(tmp_path / "c", good, {}, {})
    back = checkpoints.read(tmp_path / "c")
    assert back["state"] == good["state"] and back["io"] == good["io"] and torch.equal(back["rng"], good["rng"])


def test_a_gan_checkpoint_with_two_optimizers_schedules_and_extra_state_reads_back_safely(tmp_path):
    job = write_job(tmp_path, "gan", kind="gan", data={"name": "distribution", "size": 2000},
                    model={"name": "gan_mlp", "g_hidden": [8], "d_hidden": [8], "d_steps": 3, "average_from": 0,
                           "eval_samples": 500},
                    optimizers={"generator": {"name": "adam", "lr": 1e-3}, "discriminator": {"name": "adam", "lr": 1e-3}},
                    schedule={"name": "cosine"}, training={"epochs": 1, "batch_size": 256})
    assert main(["train", str(job)]) == 0
    saved = checkpoints.read(checkpoints.latest(tmp_path / "runs" / "gan"))
    assert saved["state"]["epoch"] == 1 and set(saved["optimizers"]) == set(saved["schedulers"]) == {"generator", "discriminator"}
    # 1,600 training rows in batches of 256: 7 discriminator steps, a generator step after every 3rd
    assert saved["model"]["_extra_state"] == {"d_steps_taken": 7, "averaged_steps": 2}
