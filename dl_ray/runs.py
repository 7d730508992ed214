"""A finished (or running) run folder read back: its spec, its best or latest checkpoint, its model.

One ``load_model`` serves ``dl-ray eval``, Tune's evaluate-trials, the Python API and the tests: the
checkpoint carries the model's I/O facts (shapes, vocabularies), so the model is rebuilt without
regenerating its data.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from dl_ray.errors import SpecError
from dl_ray.spec import JobSpec, parse_spec
from dl_ray.tracking import read_summary
from dl_ray.train import checkpoints


def checkpoint_of(target: str | Path, which: Literal["best", "last"] = "best") -> Path:
    """A checkpoint folder as given, or a run folder's best checkpoint (else its latest) / its latest."""
    path = Path(target)
    if (path / checkpoints.STATE).is_file():
        return path
    saved = checkpoints.saved(path) if path.is_dir() else {}
    if not saved:
        raise SpecError(f"no checkpoint in {path} (expected a checkpoint_epoch_NNNN folder or a run folder)")
    best = (read_summary(path) or {}).get("best_epoch") if which == "best" else None
    return saved.get(best) or saved[max(saved)]


def load_spec_of(folder: Path) -> JobSpec:
    """The resolved job a run (or one of its checkpoints) was started with."""
    path = folder / "spec.yaml"
    if not path.is_file():
        raise SpecError(f"{folder}: no spec.yaml (not a dl-ray run folder)")
    return parse_spec(yaml.safe_load(path.read_text()))


def load_model(target: str | Path, which: Literal["best", "last"] = "best", spec: JobSpec | None = None,
               device: str | torch.device = "cpu") -> tuple[Any, JobSpec]:
    """(the model with the checkpoint's weights, in eval mode, and its job) for a run folder or checkpoint folder.

    ``spec``: build the model from this job instead of the checkpoint's (an evaluate-trial's overridden fields)."""
    from dl_ray.models import ModelIO, build_model

    folder = checkpoint_of(target, which)
    saved = checkpoints.read(folder)
    spec = spec or load_spec_of(folder)
    if "io" in saved:
        io = ModelIO(**saved["io"])
    else:  # written before checkpoints carried the model's I/O facts
        from dl_ray.data import build_data

        io = build_data(spec.data).io
    model = build_model(spec.model, io, spec.regularization.dropout)
    model.load_state_dict(saved["model"])
    return model.to(device).eval(), spec


@dataclass
class Scored:
    """A run's model at one checkpoint, its data, and its metrics on the test split (``dl-ray eval``)."""

    checkpoint: Path
    model: Any
    spec: JobSpec
    data: Any
    metrics: dict[str, float]


def score_test(run_dir: Path, which: Literal["best", "last"] = "best", device: torch.device = torch.device("cpu")) -> Scored:
    """Load the run's model at its best (or latest) checkpoint and score the test split as training did."""
    from dl_ray.data import build_data
    from dl_ray.train.loop import evaluate

    checkpoint = checkpoint_of(run_dir, which)
    model, spec = load_model(checkpoint, spec=load_spec_of(run_dir), device=device)
    data = build_data(spec.data)
    return Scored(checkpoint, model, spec, data, evaluate(model, data, "test", 0, 1, device))
