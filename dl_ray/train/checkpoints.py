"""Checkpoint folders: ``<run_dir>/checkpoint_epoch_NNNN/{state.pt,metrics.json,spec.yaml}``.

With workers, Ray Train persists and prunes these folders (``CheckpointConfig``).
Ray Train's local mode (``num_workers: 0``) keeps nothing on disk, so there
:func:`persist_local` does the same job with the same names and rule: keep the
best ``keep`` by score, and always the latest.
"""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml

STATE = "state.pt"
PATTERN = re.compile(r"^checkpoint_epoch_(\d+)$")


def dir_name(epoch: int) -> str:
    return f"checkpoint_epoch_{epoch:04d}"


def write(folder: Path, state: dict[str, Any], metrics: dict[str, Any], spec: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / STATE)
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


def read(folder: str | Path) -> dict[str, Any]:
    saved = torch.load(Path(folder) / STATE, map_location="cpu", weights_only=False)
    if "optimizer" in saved:  # written before optimizers had names: the one optimizer is "main"
        saved["optimizers"], saved["schedulers"] = {"main": saved.pop("optimizer")}, {"main": saved.pop("scheduler")}
    return saved


def saved(run_dir: Path) -> dict[int, Path]:
    """Complete checkpoints in ``run_dir`` by epoch."""
    found = {}
    for child in run_dir.glob("checkpoint_epoch_*"):
        m = PATTERN.match(child.name)
        if m and (child / STATE).is_file():
            found[int(m.group(1))] = child
    return found


def latest(run_dir: Path) -> Path | None:
    found = saved(run_dir)
    return found[max(found)] if found else None


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
