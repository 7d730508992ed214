from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

ROOT = Path(__file__).resolve().parents[1]


def write_job(folder: Path, name: str = "job", **sections) -> Path:
    """A job file in ``folder`` whose runs land in ``folder/runs``."""
    spec = {"name": name, "tracking": {"wandb": "disabled"}, "storage": {"path": str(folder / "runs")}}
    for key, value in sections.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def cli(*args: str) -> tuple[int, str, str]:
    """Run ``dl-ray`` in a fresh interpreter (a real process: it may be killed by the chaos hook)."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "dl_ray.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "COLUMNS": "200"}, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def ray_cluster():
    """One real local Ray per test module (2 CPUs), as on a laptop."""
    import ray

    os.environ["DL_RAY_FAIL_AT"] = "chaos:3"  # workers inherit it: rank 0 of the run named 'chaos' dies at epoch 3
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    os.environ.pop("DL_RAY_FAIL_AT", None)
