"""Checkpoint folders: ``<run_dir>/checkpoint_epoch_NNNN/{state.pt,metrics.json,spec.yaml}``.

With workers, Ray Train persists and prunes these folders (``CheckpointConfig``).
Ray Train's local mode (``num_workers: 0``) keeps nothing on disk, so there
:func:`persist_local` does the same job with the same names and rule: keep the
best ``keep`` by score, and always the latest.

Run folders live on shared disks and in buckets that others can write, so a checkpoint is only ever loaded
with ``torch.load(weights_only=True)``, after a scan of its pickle (:func:`safe_state`): it holds tensors and
plain Python (int, float, str, bool, None, list, tuple, dict), never objects whose unpickling runs code.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import pickle
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

from dl_ray.errors import SpecError

STATE = "state.pt"
PATTERN = re.compile(r"^checkpoint_epoch_(\d+)$")


def dir_name(epoch: int) -> str:
    return f"checkpoint_epoch_{epoch:04d}"


def write(folder: Path, state: dict[str, Any], metrics: dict[str, Any], spec: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / STATE)
    if unsafe := torch.serialization.get_unsafe_globals_in_checkpoint(folder / STATE):  # a bug here, caught at once
        (folder / STATE).unlink()
        raise TypeError(f"checkpoint state holds {', '.join(unsafe)}; store tensors and plain Python only (ints, floats, "
                        "strings, lists, dicts): checkpoints are read back with torch.load(weights_only=True)")
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def payload(task, optimizers: dict, schedulers: dict, state: dict[str, Any], spec: dict[str, Any], io) -> dict[str, Any]:
    """Everything a run needs to continue, and to rebuild its model without its data (``io``: shapes, vocabularies)."""
    return {"model": task.state_dict(), "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in schedulers.items()}, "state": state, "spec": spec,
            "io": dataclasses.asdict(io)}


def restore(saved: dict[str, Any], task, optimizers: dict, schedulers: dict) -> None:
    task.load_state_dict(saved["model"])
    for name, opt in optimizers.items():
        opt.load_state_dict(saved["optimizers"][name])
    for name, sched in schedulers.items():
        sched.load_state_dict(saved["schedulers"][name])


def safe_state(folder: str | Path) -> Path:
    """``folder``'s state file, once a scan of its pickle (nothing is unpickled) shows it holds only what
    :func:`write` stores; anything else is one SpecError line, and the file is never loaded."""
    path = Path(folder) / STATE
    advice = f"delete {path.parent} or train afresh under another name (--set storage.name=NEW)"
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (ValueError, RuntimeError, OSError) as e:  # not torch.save's zip format: not written by dl-ray
        raise SpecError(f"{path}: not a checkpoint (not torch.save's zip format: {' '.join(str(e).split())}); {advice}") from None
    if unsafe:
        raise SpecError(f"{path}: refused: unpickling it would call {', '.join(unsafe)}, and dl-ray loads only checkpoints "
                        f"of tensors and plain values (any other pickle can run code); if an older dl-ray wrote it, {advice}")
    return path


def read(folder: str | Path) -> dict[str, Any]:
    path = safe_state(folder)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError) as e:  # damaged (torn write, bad copy)
        raise SpecError(f"{path}: cannot be read ({type(e).__name__}); delete {path.parent} to resume from the one "
                        "before") from None
    if "optimizer" in saved:  # written before optimizers had names: the one optimizer is "main"
        saved["optimizers"], saved["schedulers"] = {"main": saved.pop("optimizer")}, {"main": saved.pop("scheduler")}
    return saved


@contextlib.contextmanager
def opened(checkpoint) -> Iterator[Path]:
    """A Ray checkpoint (``ray.train.Checkpoint``) as a folder this process alone reads.

    A checkpoint in a bucket is downloaded into a temporary folder of this process's own. Ray's
    ``as_directory`` shares one download folder per checkpoint among the processes of a node, and the first
    reader to finish deletes it: a second worker of that node that comes in just then is handed the folder
    empty (tests/test_storage_mirror.py shows it)."""
    from pyarrow import fs

    if isinstance(checkpoint.filesystem, fs.LocalFileSystem):
        yield Path(checkpoint.path)
        return
    with tempfile.TemporaryDirectory(prefix="dl_ray-restore-") as tmp:
        folder = Path(checkpoint.to_directory(tmp))
        if not (folder / STATE).is_file():
            found = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) or "nothing"
            raise SpecError(f"{checkpoint.path}: the checkpoint Ray restores holds no {STATE} (it holds {found})")
        yield folder


def saved(run_dir: Path) -> dict[int, Path]:
    """Complete checkpoints in ``run_dir`` by epoch."""
    found = {}
    for child in run_dir.glob("checkpoint_epoch_*"):
        m = PATTERN.match(child.name)
        if m and (child / STATE).is_file():
            found[int(m.group(1))] = child
    return found


def latest(run_dir: Path) -> Path | None:
    """The checkpoint a run resumes from, scanned (:func:`safe_state`) before anything starts."""
    found = saved(run_dir)
    return safe_state(found[max(found)]).parent if found else None


def persist_local(src: Path, run_dir: Path, epoch: int, keep: int, score: str | None, mode: str) -> Path:
    dest = run_dir / dir_name(epoch)
    tmp = run_dir / f".tmp_{dest.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    found = saved(run_dir)
    sign = -1 if mode == "max" else 1

    def rank(item):
        ep, folder = item
        value = json.loads((folder / "metrics.json").read_text()).get(score) if score else None
        return (sign * value, -ep) if value is not None else (float("inf"), -ep)

    best = sorted(found.items(), key=rank)[:keep] if score else sorted(found.items())[-keep:]
    keep_epochs = {ep for ep, _ in best} | {max(found)}
    for ep, folder in found.items():
        if ep not in keep_epochs:
            shutil.rmtree(folder, ignore_errors=True)
    return dest
