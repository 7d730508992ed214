"""Run folders mirrored to a bucket (tests/buckets.py: local S3 and GCS servers speaking the real protocols): sent
whole, started again on another node, following the bucket's pruning, never sending back what the bucket dropped."""
from __future__ import annotations

import os
import threading
from pathlib import Path

from dl_ray.cluster.mirror import Mirror, delete_folder
from tests.buckets import bucket, bucket_tree, gcs_server, s3, s3_server  # noqa: F401 (fixtures)


def local_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def write(root: Path, name: str, data: bytes) -> None:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(data)


def test_a_run_folder_goes_to_the_bucket_whole_overwrites_and_deletes_there(bucket, tmp_path):
    uri, here = f"{bucket[0]}/runs/r1", tmp_path / "node_a" / "r1"
    write(here, "metrics.csv", b"epoch\n1\n")
    write(here, "checkpoint_epoch_0001/state.pt", os.urandom(3 << 20))  # several multipart chunks
    write(here, "checkpoint_epoch_0002/state.pt", b"two")
    write(here, "metrics.tmp", b"half-written")
    mirror = Mirror(uri, here)
    assert mirror.push() == 3 and mirror.push() == 0  # nothing changed: nothing sent again
    assert bucket_tree(uri) == {k: v for k, v in local_tree(here).items() if k != "metrics.tmp"}

    write(here, "metrics.csv", b"epoch\n1\n2\n")  # rewritten
    write(here, "checkpoint_epoch_0003/state.pt", b"three")
    for path in (here / "checkpoint_epoch_0001").iterdir():  # pruned, as persist_local does
        path.unlink()
    (here / "checkpoint_epoch_0001").rmdir()
    assert mirror.push() == 2
    tree = bucket_tree(uri)
    assert tree == {k: v for k, v in local_tree(here).items() if k != "metrics.tmp"}, sorted(tree)  # no folder left


def test_a_run_started_again_on_a_node_keeps_nothing_the_bucket_lacks(bucket, tmp_path):
    from dl_ray.cluster.mirror import for_run

    uri = f"{bucket[0]}/runs/r1"
    here = tmp_path / "r1"
    write(here, "spec.yaml", b"name: r1\n")
    Mirror(uri, here).push()
    write(here, "checkpoint_epoch_0003/state.pt", b"left by an earlier run whose bucket folder was deleted")
    write(here, "metrics.csv", b"epoch\n1\n2\n3\n")
    assert for_run(here, uri, fresh=True, checkpoints=False) is not None  # whatever that mirror lists: all go
    assert local_tree(here) == {"spec.yaml": b"name: r1\n"} and not (here / "checkpoint_epoch_0003").exists()


def test_another_node_resumes_from_the_bucket_and_follows_its_pruning(bucket, tmp_path):
    from pyarrow import fs

    uri = f"{bucket[0]}/runs/r1"
    first = tmp_path / "node_a" / "r1"
    write(first, "spec.yaml", b"name: r1\n")
    write(first, "checkpoint_epoch_0001/state.pt", b"one")
    write(first, "checkpoint_epoch_0002/state.pt", b"two")
    Mirror(uri, first).push()

    second = tmp_path / "node_b" / "r1"
    mirror = Mirror(uri, second)
    assert mirror.pull() == 3 and local_tree(second) == local_tree(first)
    assert mirror.pull() == 0 and mirror.push() == 0  # in step both ways

    filesystem, root = fs.FileSystem.from_uri(uri)
    delete_folder(filesystem, f"{root}/checkpoint_epoch_0001")  # Ray Train prunes a checkpoint in the bucket
    with filesystem.open_output_stream(f"{root}/checkpoint_epoch_0003/state.pt") as out:  # and writes a new one
        out.write(b"three")
    write(second, "spec.yaml", b"name: r1\nepochs: 5\n")  # written here since the last pull: stays
    assert mirror.pull() == 1
    assert local_tree(second) == {"spec.yaml": b"name: r1\nepochs: 5\n", "checkpoint_epoch_0002/state.pt": b"two",
                                  "checkpoint_epoch_0003/state.pt": b"three"}
    assert not (second / "checkpoint_epoch_0001").exists()
    assert mirror.push() == 1 and bucket_tree(uri)["spec.yaml"] == b"name: r1\nepochs: 5\n"


def test_the_driver_never_sends_back_a_checkpoint_pruned_in_the_bucket(bucket, tmp_path):
    from pyarrow import fs

    uri, here = f"{bucket[0]}/runs/r1", tmp_path / "r1"  # one node's folder, written by rank 0 and by the driver
    rank0, driver = Mirror(uri, here), Mirror(uri, here)
    write(here, "checkpoint_epoch_0001/state.pt", b"one")
    write(here, "metrics.csv", b"epoch\n1\n")
    assert rank0.push() == 2
    filesystem, root = fs.FileSystem.from_uri(uri)
    delete_folder(filesystem, f"{root}/checkpoint_epoch_0001")  # Ray Train prunes it after the next checkpoint
    write(here, "spec.yaml", b"name: r1\n")
    driver.pull()
    assert driver.push(checkpoints=False) == 1  # spec.yaml; metrics.csv is rank 0's, as in the bucket
    assert set(bucket_tree(uri)) == {"metrics.csv", "spec.yaml"}


def test_rank_0_never_sends_back_rays_snapshot_or_a_pruned_checkpoint_another_process_fetched_again(bucket, tmp_path):
    """Two workers of one node share its scratch folder. After the last epoch's report rank 0 fetches the bucket
    while Ray has yet to write its new snapshot and prune the older checkpoint; rank 1 then fetches the same files
    again (a new copy, so a new mtime). Rank 0's next push must not take that stale copy for its own write: sent
    back, the old snapshot and a file of the pruned checkpoint made a rerun restore that pruned checkpoint."""
    from pyarrow import fs

    uri, here = f"{bucket[0]}/runs/r1", tmp_path / "r1"
    filesystem, root = fs.FileSystem.from_uri(uri)
    ray_writes = {"checkpoint_manager_snapshot.json": b'{"latest": 1}', "checkpoint_epoch_0001/state.pt": b"one",
                  "checkpoint_epoch_0001/metrics.json": b"{}"}
    for name, data in ray_writes.items():  # Ray Train's writes
        with filesystem.open_output_stream(f"{root}/{name}") as f:
            f.write(data)
    rank0 = Mirror(uri, here)
    rank0.pull()
    with filesystem.open_output_stream(f"{root}/checkpoint_manager_snapshot.json") as f:
        f.write(b'{"latest": 2}')  # Ray registers epoch 2 ...
    delete_folder(filesystem, f"{root}/checkpoint_epoch_0001")  # ... and prunes epoch 1
    for name, data in ray_writes.items():  # rank 1's copies of what rank 0 fetched, made just before
        (here / name).unlink()
        write(here, name, data)
    write(here, "metrics.csv", b"epoch\n2\n")
    assert rank0.push(checkpoints=False) == 1  # its own metrics.csv, nothing of Ray's
    tree = bucket_tree(uri)
    assert tree["checkpoint_manager_snapshot.json"] == b'{"latest": 2}' and set(tree) == {
        "checkpoint_manager_snapshot.json", "metrics.csv"}


def test_a_worker_restoring_a_bucket_checkpoint_reads_it_whole_while_another_deletes_rays_shared_copy(s3, tmp_path):
    """Ray's ``Checkpoint.as_directory`` downloads a bucket checkpoint into one folder per node, and the worker that
    finishes reading first deletes it, holding Ray's lock on it; a worker of the same node that comes in then waits for
    that lock and is handed the folder empty (a rerun's start failed so, now and then, with two workers on a node).
    Here another worker is mid-deletion: Ray's folder is empty and its lock held. ``checkpoints.opened`` still reads
    the whole checkpoint, from a folder of its own, without waiting."""
    from ray.air._internal.filelock import TempFileLock
    from ray.train import Checkpoint

    from dl_ray.train import checkpoints

    saved = {"state.pt": os.urandom(100_000), "metrics.json": b'{"epoch": 2}'}
    for name, data in saved.items():
        write(tmp_path / "checkpoint_epoch_0002", name, data)
    Mirror(f"s3://{s3}/run", tmp_path).push()
    checkpoint = Checkpoint(f"s3://{s3}/run/checkpoint_epoch_0002")
    shared = Path(checkpoint._get_temporary_checkpoint_dir())
    shared.mkdir()
    read = {}

    def restore():
        with checkpoints.opened(checkpoint) as folder:
            read.update(folder=folder, tree=local_tree(folder))

    try:
        with TempFileLock(str(shared), timeout=0):  # the other worker, deleting Ray's copy
            reader = threading.Thread(target=restore)
            reader.start()
            reader.join(timeout=30)  # as_directory would wait here for the lock, then read an empty folder
            assert not reader.is_alive(), "the restore waited on another worker's lock"
    finally:
        shared.rmdir()
    assert read["tree"] == saved and read["folder"] != shared and not read["folder"].exists()
