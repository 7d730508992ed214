"""The CIFAR-10 loader on batch files written here in the official python format (no network)."""
from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dl_ray.cli import main
from dl_ray.data import build_data
from dl_ray.data.cifar import Cifar10Config
from tests.conftest import write_job

PER_BATCH, TEST = 40, 30


def cifar_batches(n: int, seed: int) -> dict[bytes, object]:
    """One batch as CIFAR-10's python files hold it; channel c's pixels lie in [60c, 60c + 100] so that a single
    mean and std for all channels would leave each channel off centre."""
    rng = np.random.default_rng(seed)
    planes = [rng.integers(60 * c, 60 * c + 101, size=(n, 1024)) for c in range(3)]
    return {b"batch_label": b"testing", b"labels": rng.integers(0, 10, n).tolist(),
            b"data": np.concatenate(planes, axis=1).astype(np.uint8), b"filenames": [b"x.png"] * n}


def write_cifar_batches(root: Path) -> dict[str, dict]:
    """The six batch files, small, in ``root/cifar-10-batches-py`` (as the archive unpacks); returns their contents."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    batches = {f"data_batch_{i}": cifar_batches(PER_BATCH, i) for i in range(1, 6)} | {"test_batch": cifar_batches(TEST, 9)}
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))  # the files were written by Python 2's cPickle
    return batches


@pytest.fixture
def cifar_dir(tmp_path):
    batches = write_cifar_batches(tmp_path)
    return tmp_path / "cifar-10-batches-py", batches


def bundle_of(path, **fields):
    return build_data(Cifar10Config(name="cifar10", path=path, **fields))


def test_images_stay_uint8_with_their_labels(cifar_dir):
    folder, batches = cifar_dir
    data = bundle_of(folder)
    assert (len(data.train), len(data.val), len(data.test)) == (180, 20, TEST)  # val_fraction 0.1 of 5 x 40
    assert data.input_shape == (3, 32, 32) and data.num_outputs == 10 and data.meta["classes"][0] == "airplane"
    x_test, y_test = data.test.tensors
    assert x_test.dtype == data.train.tensors[0].dtype == torch.uint8
    written = batches["test_batch"]
    order = [written[b"data"].tolist().index(row) for row in x_test.flatten(1).tolist()]  # shuffled by split_seed
    assert sorted(order) == list(range(TEST))
    assert torch.equal(x_test[3, 1], torch.from_numpy(written[b"data"][order[3], 1024:2048].reshape(32, 32)))  # green
    assert y_test.tolist() == [written[b"labels"][i] for i in order]
    label_of = {row.tobytes(): label for i in range(1, 6) for row, label in
                zip(batches[f"data_batch_{i}"][b"data"], batches[f"data_batch_{i}"][b"labels"])}
    x, y = (torch.cat(t) for t in zip(data.train.tensors, data.val.tensors))
    assert sorted(row.tobytes() for row in x.flatten(1).numpy()) == sorted(label_of)  # every training image once
    assert [label_of[row.tobytes()] for row in x.flatten(1).numpy()] == y.tolist()


def test_the_loader_normalises_each_channel_by_the_training_split(cifar_dir):
    data = bundle_of(cifar_dir[0])
    x = torch.cat([batch[0] for batch in data.loader("train", 64)])
    assert x.dtype == torch.float32 and x.shape == (180, 3, 32, 32)
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    raw = data.train.tensors[0].double()
    assert torch.allclose(torch.tensor(data.meta["mean"], dtype=torch.float64), raw.mean(dim=(0, 2, 3)), atol=1e-4)
    val = next(iter(data.loader("val", 64)))[0]
    assert val.dtype == torch.float32 and abs(float(val.mean())) < 0.2  # the training split's statistics apply


def test_the_tar_gz_gives_the_same_bundle_and_limit_cuts_it(cifar_dir, tmp_path):
    folder, _ = cifar_dir
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    from_folder, from_tar = bundle_of(tmp_path), bundle_of(archive)  # tmp_path holds cifar-10-batches-py
    for split in ("train", "val", "test"):
        for a, b in zip(getattr(from_folder, split).tensors, getattr(from_tar, split).tensors):
            assert torch.equal(a, b)
    small = bundle_of(folder, limit=50)
    assert (len(small.train), len(small.val), len(small.test)) == (45, 5, 30)


def test_a_lenet_trains_on_it_through_the_cli(cifar_dir, tmp_path, one_torch_thread):
    job = write_job(tmp_path, "cifar", model={"name": "lenet5"}, data={"name": "cifar10", "path": str(cifar_dir[0])},
                    training={"epochs": 1, "batch_size": 32})
    assert main(["train", str(job)]) == 0
    assert (tmp_path / "runs" / "cifar" / "summary.json").is_file()


class Shell:
    def __reduce__(self):
        import os

        return os.system, ("echo pwned",)


def overwrite(name: str, blob: bytes):
    def change(folder):
        (folder / name).write_bytes(blob(folder / name) if callable(blob) else blob)
        return folder

    return change


def remove(name: str):
    def change(folder):
        (folder / name).unlink()
        return folder

    return change


@pytest.mark.parametrize(("break_it", "expected"), [
    (lambda folder: folder / "nowhere", "no such file or folder"),
    (remove("data_batch_3"), "lacks the CIFAR-10 python batch files data_batch_3"),
    (overwrite("test_batch", lambda file: file.read_bytes()[:5000]), "test_batch is not a CIFAR-10 batch file"),
    (overwrite("data_batch_1", pickle.dumps({b"data": Shell()})), "refusing to load posix.system"),
    (overwrite("data_batch_2", pickle.dumps({b"data": np.zeros((4, 3072)), b"labels": [0] * 4})),
     "b'data' must be an N x 3072 uint8 array"),
])
def test_bad_files_are_one_line_naming_data_path_and_exit_2(cifar_dir, tmp_path, capsys, break_it, expected):
    path = break_it(cifar_dir[0])
    job = write_job(tmp_path, "bad", model={"name": "lenet5"}, data={"name": "cifar10", "path": str(path)})
    assert main(["train", str(job)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "pwned" not in out
    assert err.count("\n") == 1 and "data.path: " in err and expected in err, err
    assert not (tmp_path / "runs").exists()


def test_a_test_fraction_is_refused():
    with pytest.raises(ValueError, match="test split is its own test_batch"):
        Cifar10Config(name="cifar10", test_fraction=0.1)


def test_archive_reader_skips_what_is_not_a_batch(cifar_dir, tmp_path):
    """The official archive also holds batches.meta and a readme: only the six batch files are read."""
    folder, _ = cifar_dir
    (folder / "batches.meta").write_bytes(b"not a batch")
    archive = tmp_path / "c.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
        tar.addfile(tarfile.TarInfo("cifar-10-batches-py/readme.html"), io.BytesIO(b""))
    assert len(bundle_of(archive).test) == TEST
