"""An RL run folder: ``spec.yaml``, ``metrics.csv`` (+ W&B), ``checkpoint/``, ``summary.json``, ``curves.png``.

The same command on the same folder resumes from ``checkpoint/`` (written atomically: a killed driver
leaves either the previous or the new checkpoint, never half of one).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from dl_ray.rl.spec import RLJobSpec, parse_rl_spec
from dl_ray.spec import refuse_other_spec
from dl_ray.tracking import History, WandbRun, write_summary

# Fields that may change when a run is started again (it resumes); anything else needs a new storage.name.
RESUMABLE = ("dqn.total_env_steps", "dqn.max_time_s", "dqn.progress_every_s", "q_learning.episodes", "actors.num_actors",
             "actors.cpus_per_actor", "actors.env_threads", "actors.overlap", "actors.gpus_per_actor",
             "actors.inference_dtype", "learner", "evaluation", "checkpoint", "tracking", "storage.path")


class RunFolder:
    def __init__(self, spec: RLJobSpec):
        self.spec, self.dir = spec, spec.run_dir
        self.checkpoint_dir = self.dir / "checkpoint"
        self.history = History(self.dir / "metrics.csv")
        self.wandb: WandbRun | None = None

    def check(self) -> None:
        """A folder holding a run with another spec is refused (nothing is overwritten)."""
        refuse_other_spec(self.dir, self.spec.to_dict(), RESUMABLE, parse_rl_spec)

    def open(self) -> dict[str, Any] | None:
        """Create the folder, start tracking; returns the last checkpoint (or None for a fresh run)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "spec.yaml").write_text(yaml.safe_dump(self.spec.to_dict(), sort_keys=False))
        state = self.load()
        self.history.rows = _read_rows(self.history.path, until=state["counters"]["env_steps"]) if state else []
        self.wandb = WandbRun(self.spec, self.dir)
        return state

    def log(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if self.wandb:
            self.wandb.log({k: v for k, v in row.items() if k != "env_steps"}, step=int(row["env_steps"]))

    def log_video(self, gif: Path, env_steps: int, stats: dict[str, float]) -> None:
        if self.wandb and self.wandb.run is not None:
            import wandb

            self.wandb.log({"eval/video": wandb.Video(str(gif), format="gif"), **stats}, step=env_steps)

    def save(self, state: dict[str, Any], replay: list[dict[str, np.ndarray]] | None = None) -> None:
        tmp, old = self.dir / "checkpoint.tmp", self.dir / "checkpoint.old"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        torch.save(state, tmp / "state.pt")
        for i, shard in enumerate(replay or []):
            np.savez(tmp / f"replay_{i}.npz", **shard)
        shutil.rmtree(old, ignore_errors=True)
        if self.checkpoint_dir.exists():
            self.checkpoint_dir.rename(old)
        tmp.rename(self.checkpoint_dir)
        shutil.rmtree(old, ignore_errors=True)

    def load(self) -> dict[str, Any] | None:
        return load_checkpoint(self.dir)

    def finish(self, summary: dict[str, Any]) -> None:
        write_summary(self.dir, summary)
        plot_curves(self.dir / "metrics.csv", self.dir / "curves.png")
        if self.wandb:
            self.wandb.finish({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})


def load_checkpoint(run_dir: Path, replay: bool = True) -> dict[str, Any] | None:
    """The run's last checkpoint (learner, counters, spec; ``replay``: its saved shards too), or None."""
    for folder in (run_dir / "checkpoint", run_dir / "checkpoint.old"):  # .old: killed between the two renames
        if (folder / "state.pt").is_file():
            state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
            state["replay"] = [dict(np.load(p)) for p in sorted(folder.glob("replay_*.npz"))] if replay else []
            return state
    return None


def has_saved_replay(run_dir: Path) -> bool:
    """The last checkpoint holds the replay's contents (replay.save_in_checkpoint)."""
    for folder in (run_dir / "checkpoint", run_dir / "checkpoint.old"):  # the one load_checkpoint reads
        if (folder / "state.pt").is_file():
            return any(folder.glob("replay_*.npz"))
    return False


# curves.png: one panel per quantity, each with the metrics.csv columns drawn in it (panels the run lacks are left out)
PANELS = (("return", (("episodic_return", "training (last 100 episodes, raw)"), ("eval/return_mean", "evaluation"))),
          ("TD loss", (("loss", None),)), ("ε (mean over actors)", (("epsilon", None),)),
          ("env steps/s", (("sps", None),)))


def plot_curves(csv_path: Path, png: Path) -> dict[str, int]:
    """Return (training episodes and evaluations), TD loss, ε and env steps/s against env steps, from the rows the
    run logs every dqn.progress_every_s seconds; the number of points of each line drawn, by column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    if not csv_path.is_file():
        return {}
    df = pd.read_csv(csv_path)
    panels = [(title, [(c, label) for c, label in lines if c in df and df[c].notna().any()]) for title, lines in PANELS]
    panels = [(title, lines) for title, lines in panels if lines]
    if not panels:
        return {}
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.2 * len(panels) + 0.6), sharex=True, squeeze=False)
    drawn = {}
    for ax, (title, lines) in zip(axes[:, 0], panels):
        for column, label in lines:
            part = df[["env_steps", column]].dropna()
            ax.plot(part["env_steps"], part[column], marker="o" if column.startswith("eval") or len(part) < 20 else None,
                    markersize=3, label=label)
            drawn[column] = len(part)
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=8)
    axes[-1, 0].set_xlabel("env steps")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return drawn


def _read_rows(path: Path, until: int) -> list[dict[str, Any]]:
    """Rows of ``metrics.csv`` up to env step ``until`` (a resumed run redoes the later ones)."""
    if not path.is_file():
        return []
    import pandas as pd

    rows = pd.read_csv(path).to_dict("records")
    return [{k: v for k, v in r.items() if v == v} for r in rows if r["env_steps"] <= until]  # v == v drops NaN
