"""A Ray Tune sweep over a style-transfer job's fields (``dl-ray tune``; e.g. beta/alpha), through dl_ray/tune.

This module is the kind's :class:`dl_ray.tune.spec.SweptKind`: dl_ray/tune calls the functions below where a
training job would go through the generic loop.

Each trial is one optimisation in the trial's own process, in its own run folder (``<sweep>/<sweep>_NNNNN``, the
files a run writes); it reports once, at its end: ``j_content``, ``j_style``, ``j`` and ``j_style_drop`` (start /
end). The sweep folder gets ``grid.png`` besides the usual results: content, style and every trial's result,
labelled with its swept values.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dl_ray.errors import SpecError
from dl_ray.style import spec

parse = spec.parse_style
absolute_paths = spec.absolute_paths  # image files made absolute: trials run in their own folders

SWEEPABLE = ("costs", "optimizer", "training", "features", "size", "content", "style")
REPORTS = {"j_content": "min", "j_style": "min", "j": "min", "j_style_drop": "max"}


def check(sweep) -> Any:
    """What dl_ray.tune.sweep.check does for a training job: the trial's job is valid, its images and weights
    load, the metric is one a trial reports, the scheduler fits one report per trial."""
    from dl_ray.style.run import prepare

    job, tune = parse(sweep.trial_spec({})), sweep.tune
    if tune.trial != "train":
        raise SpecError(f"tune.trial: a style-transfer sweep optimises in every trial; allowed: train (got {tune.trial})")
    if tune.scheduler.name != "fifo":
        raise SpecError(f"tune.scheduler: {tune.scheduler.name} stops or copies trials between epochs, and a style-transfer "
                        "trial reports once, at its end; allowed: fifo")
    if tune.metric not in REPORTS:
        raise SpecError(f"tune.metric: {tune.metric!r} is not reported by a style-transfer trial; allowed: {', '.join(REPORTS)}")
    tune.mode = tune.mode or REPORTS[tune.metric]
    sweep.direction = tune.mode
    prepare(job, torch.device("cpu"))  # images and the weights file: bad ones are refused before Ray starts
    return job


def trial(config: dict[str, Any], plan: dict[str, Any]) -> None:
    """One trial: the base job with this trial's values, optimised in its run folder; one report at the end."""
    import ray.tune
    from rich.console import Console

    from dl_ray.style.run import run
    from dl_ray.tune.trial import kept_in_bucket, trial_job

    spec, run_dir = trial_job(config, plan)
    with kept_in_bucket(plan, run_dir):
        summary = run(spec, Console(quiet=True))
    final = summary["final"]
    ray.tune.report({"j_content": final["j_content"], "j_style": final["j_style"], "j": final["j"],
                     "j_style_drop": summary["j_style_drop"], "epoch": 1, "time/epoch_s": summary["time_s"]})


def subject(job) -> str:
    """What the sweep's winner is, in words (a style job has no model or data to name)."""
    return f"style transfer of {job.content} in the style of {job.style}"


def write_outputs(rows: list[dict[str, Any]], sweep) -> None:
    """The sweep folder's picture of every trial's result (grid.png)."""
    write_grid(rows, sweep, sweep.folder / "grid.png")


def write_grid(rows: list[dict[str, Any]], sweep, path: Path) -> Path | None:
    """Content, style, then each finished trial's result.png in the order of its swept values, one PNG."""
    from PIL import Image

    from dl_ray.fmt import num
    from dl_ray.plots import image_grid
    from dl_ray.tune.progress import short

    done = sorted((r for r in rows if (sweep.folder / r["trial"] / "result.png").is_file()),
                  key=lambda r: tuple(_order(r[k]) for k in sweep.space))
    if not done:
        return None
    images = [_read(sweep.folder / r["trial"] / "result.png", Image) for r in done]
    labels = [" ".join(f"{short(k)} {num(r[k])}" for k in sweep.space) for r in done]
    c, s = _content_and_style(sweep, images[0].shape[1:])
    return image_grid(torch.stack([c, s, *images]), path, nrow=min(len(images) + 2, 6), labels=["content", "style", *labels],
                      title=f"sweep {sweep.name}: {', '.join(short(k) for k in sweep.space)}", size=12)


def _order(value: Any) -> tuple:
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def _read(path: Path, image_module) -> torch.Tensor:
    import numpy as np

    with image_module.open(path) as img:
        return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).float() / 255


def _content_and_style(sweep, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    from dl_ray.style.images import content_and_style, resize

    c, s = content_and_style(sweep.job.content, sweep.job.style, sweep.job.size)
    return resize(c, *size), resize(s, *size)
