from __future__ import annotations

import os
import queue
import sys
import threading
import time
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


class Lines:
    """A child process's output, read line by line on a thread, so a test waits for the line that says something
    happened (an event), with a deadline, instead of polling files or spinning on ``readline`` (which returns ''
    forever once the process is gone). Start the child with ``PYTHONUNBUFFERED=1``: lines must not wait in a buffer."""

    def __init__(self, stream):
        self.seen: list[str] = []
        self.ended = False
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)  # end of output: the process closed it (it ended)

    def wait_for(self, wanted, timeout_s: float = 120, count: int = 1) -> str:
        """Block until the ``count``-th line for which ``wanted(line)`` holds; fail at the deadline or at the end of output."""
        deadline, found = time.monotonic() + timeout_s, 0
        while True:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                raise AssertionError(f"no such line within {timeout_s:.0f} s; output so far:\n{''.join(self.seen)}") from None
            if line is None:
                self.ended = True
                raise AssertionError(f"the process ended before printing such a line; its output:\n{''.join(self.seen)}")
            self.seen.append(line)
            found += bool(wanted(line))
            if found == count:
                return line

    def rest(self) -> str:
        """Everything it printed; call it once the process has ended (it waits for the end of its output)."""
        while not self.ended:
            line = self._lines.get()
            self.ended = line is None
            self.seen += [] if line is None else [line]
        return "".join(self.seen)


def cli(*args: str) -> tuple[int, str, str]:
    """Run ``dl-ray`` in a fresh interpreter (a real process: it may be killed by the chaos hook)."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "dl_ray.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "COLUMNS": "200"}, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def one_torch_thread():
    """For modules of tiny networks: intra-op threads do not pay there, and on a busy 2-core box cost several times one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ray_cluster():
    """One real local Ray per test module (2 CPUs), as on a laptop."""
    import ray

    os.environ["DL_RAY_FAIL_AT"] = "chaos:3"  # workers inherit it: rank 0 of the run named 'chaos' dies at epoch 3
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    os.environ.pop("DL_RAY_FAIL_AT", None)
