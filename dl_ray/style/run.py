"""A style-transfer run: the pixels of G optimised for J(G) = alpha J_content(C, G) + beta J_style(S, G).

Everything that can be wrong with the job (images, layers, the weights file) is found by :func:`prepare`, before
the run folder is made. The run folder then gets:

* ``generated/step_NNNN.png`` every ``training.save_every`` steps, ``result.png`` at the end;
* ``content_style_result.png``: content | style | result side by side;
* ``metrics.csv`` (one row per step: J_content, J_style, J, seconds) and ``curves.png`` (J_content and J_style);
* ``summary.json`` (status as dl_ray/statuses.py words it, the costs at the start and the end), ``spec.yaml``,
  and the W&B run (offline by default) with the costs and the images.

A finished run reports again when its command is given again; an unfinished one starts over (it is short).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from rich.console import Console

from dl_ray.errors import RunError, SpecError
from dl_ray.models.style_features import VGG19Features
from dl_ray.style import costs
from dl_ray.style.images import content_and_style
from dl_ray.style.spec import StyleTransferSpec, parse_style

STEP_DIR = "generated"
TRIPTYCH = "content_style_result.png"


@dataclass
class Problem:
    """What the optimisation needs, built and checked before anything is written."""

    spec: StyleTransferSpec
    content: torch.Tensor
    """(1, 3, H, W) in [0, 1], as every image here."""
    style: torch.Tensor
    net: VGG19Features
    content_target: torch.Tensor
    """a(C) at the content layer."""
    style_grams: dict[str, torch.Tensor]
    """G(S) per style layer."""
    device: torch.device

    def costs(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(J, J_content, J_style) of the generated image ``g``."""
        c = self.spec.costs
        acts = self.net(g, self.spec.layers)
        j_content = costs.content_cost(self.content_target, acts[c.content_layer])
        j_style = costs.style_cost(self.style_grams, acts, c.style_layers)
        return costs.total_cost(j_content, j_style, c.alpha, c.beta), j_content, j_style


def device_for(spec: StyleTransferSpec) -> torch.device:
    """CUDA when asked for; asking on a machine without it is an error, not a silent run on the CPU."""
    if spec.scaling.use_gpu and not torch.cuda.is_available():
        raise SpecError("scaling.use_gpu: true, but torch sees no CUDA GPU on this machine; allowed here: false")
    return torch.device("cuda" if spec.scaling.use_gpu else "cpu")


def prepare(spec: StyleTransferSpec, device: torch.device | None = None) -> Problem:
    """Images read, features built (and the weights file loaded), targets computed; bad input is a SpecError."""
    device = device or device_for(spec)
    content, style = content_and_style(spec.content, spec.style, spec.size)
    f = spec.features
    net = VGG19Features(f.weights, f.pooling, f.seed).to(device)
    content, style = content[None].to(device), style[None].to(device)
    with torch.no_grad():
        target = net(content, [spec.costs.content_layer])[spec.costs.content_layer]
        style_acts = net(style, list(spec.costs.style_layers))
    grams = {layer: costs.gram_matrix(a) for layer, a in style_acts.items()}
    return Problem(spec, content, style, net, target, grams, device)


def initial_image(problem: Problem) -> torch.Tensor:
    """G0: noise, or the content image blended with noise_ratio of it (the course's start)."""
    t = problem.spec.training
    gen = torch.Generator().manual_seed(t.seed)
    noise = torch.rand(problem.content.shape, generator=gen).to(problem.device)
    if t.init == "noise":
        return noise
    return t.noise_ratio * noise + (1 - t.noise_ratio) * problem.content


def make_optimizer(spec: StyleTransferSpec, g: torch.Tensor) -> torch.optim.Optimizer:
    o = spec.optimizer
    if o.name == "adam":
        return torch.optim.Adam([g], lr=o.lr)
    # One step() = one L-BFGS iteration, so steps count alike for both optimisers and the image is saved between them.
    # No tolerances: J's scale depends on the layers and images (J_style alone can be ~1e-4), and torch's
    # defaults (gradient 1e-7) would end the optimisation at once; the step count ends it.
    return torch.optim.LBFGS([g], lr=o.lr, max_iter=1, history_size=o.history_size, line_search_fn="strong_wolfe",
                             tolerance_grad=0.0, tolerance_change=0.0)


def optimise(problem: Problem, g: torch.Tensor, steps: int,
             on_step: Callable[[int, dict[str, float]], None] = lambda step, values: None) -> dict[str, float]:
    """``steps`` updates of the pixels ``g`` (in place); ``on_step(step, costs)`` before each update (step 0: the
    start) and after the last (step ``steps``). Returns the final costs; ``g`` ends clamped to [0, 1].

    The costs are those of ``g`` clamped to [0, 1]: one fixed function of ``g``, as L-BFGS's curvature pairs and
    line search assume (clamping ``g`` itself between steps would move it behind their back). L-BFGS restarts
    when a step finds no decrease: without it J froze for good after ~25 steps of the shipped job.
    A non-finite J is a RunError."""
    g.requires_grad_(True)
    opt, last = make_optimizer(problem.spec, g), math.inf
    for step in range(steps):
        seen: dict[str, float] = {}

        def closure() -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            j, jc, js = problem.costs(g.clamp(0, 1))
            j.backward()
            if not seen:  # the costs at the current image (a line search evaluates others too)
                seen.update(j=j.item(), j_content=jc.item(), j_style=js.item())
            return j

        if isinstance(opt, torch.optim.LBFGS):
            opt.step(closure)
            if step and seen["j"] >= last:  # the line search found no decrease: restart from steepest descent
                opt = make_optimizer(problem.spec, g)
            last = seen["j"]
        else:
            closure()
            if math.isfinite(seen["j"]):
                opt.step()
        if not math.isfinite(seen["j"]):
            raise RunError(f"J became non-finite ({seen['j']}) at step {step}: lower optimizer.lr")
        on_step(step, seen)
    with torch.no_grad():
        g.clamp_(0, 1)
        j, jc, js = problem.costs(g)
    final = {"j": j.item(), "j_content": jc.item(), "j_style": js.item()}
    on_step(steps, final)
    return final


# ---------------------------------------------------------------- the run and its files


def save_png(image: torch.Tensor, path: Path) -> Path:
    from PIL import Image

    pixels = (image.detach().float().cpu().clamp(0, 1)[0].permute(1, 2, 0) * 255).round().byte().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def plot_costs(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    from dl_ray.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, label in zip(axes, ("j_content", "j_style"), ("J_content", "J_style")):
        ax.plot([r["step"] for r in rows], [r[key] for r in rows], lw=1.5)
        ax.set(xlabel="step", ylabel=label, yscale="log" if min(r[key] for r in rows) > 0 else "linear")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def features_label(spec: StyleTransferSpec) -> str:
    f = spec.features
    pooling = "" if f.pooling == "max" else ", avg pooling"
    return f"VGG-19 weights {f.weights.name}{pooling}" if f.weights else f"VGG-19 random weights (seed {f.seed}{pooling})"


class Progress:
    """One line at the start, then one every ``every_s`` seconds, and one at the end."""

    def __init__(self, console: Console, steps: int, every_s: float):
        self.console, self.steps, self.every_s = console, steps, every_s
        self.start = self.last = time.monotonic()

    def __call__(self, step: int, values: dict[str, float]) -> None:
        now = time.monotonic()
        if step in (0, self.steps) or now - self.last >= self.every_s:
            self.last, elapsed = now, now - self.start
            rate = f"{step / elapsed:5.2f} steps/s" if step else " " * 13
            self.console.print(f"step {step:>{len(str(self.steps))}}/{self.steps}  J {values['j']:.4e}  "
                               f"J_content {values['j_content']:.4e}  J_style {values['j_style']:.4e}  {rate}  "
                               f"{elapsed:6.1f} s", highlight=False)


def run(spec: StyleTransferSpec, console: Console, problem: Problem | None = None) -> dict[str, Any]:
    """Optimise, write the run folder and return its summary (a finished run: its summary again)."""
    from dl_ray.spec import refuse_other_spec, writable
    from dl_ray.tracking import read_summary

    writable(spec)
    problem = problem or prepare(spec)
    run_dir = spec.run_dir
    refuse_other_spec(run_dir, spec.to_dict(), (), parse_style)
    done = read_summary(run_dir)
    if done and done.get("status") == "completed":
        console.print(f"{spec.name}: finished before; {_report(done, run_dir)}", highlight=False)
        return done
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SpecError(f"storage.path: cannot create the run folder {run_dir}: {e.strerror}") from None
    import yaml

    (run_dir / "spec.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    return _optimise_into(problem, run_dir, console)


def _optimise_into(problem: Problem, run_dir: Path, console: Console) -> dict[str, Any]:
    from dl_ray.statuses import COMPLETED, FAILED, INTERRUPTED, NONFINITE_LOSS, STOPPED, status_fields
    from dl_ray.tracking import History, WandbRun, write_summary

    spec, t = problem.spec, problem.spec.training
    h, w = problem.content.shape[2:]
    console.print(f"{spec.name}: style transfer of {spec.content} in the style of {spec.style}, {w}x{h} px, "
                  f"{features_label(spec)}, {spec.optimizer.name} for {t.steps} steps on {problem.device.type}; "
                  f"alpha {spec.costs.alpha:g}, beta {spec.costs.beta:g}", highlight=False)
    history, tracker = History(run_dir / "metrics.csv"), WandbRun(spec, run_dir)
    g, progress, started = initial_image(problem), Progress(console, t.steps, t.progress_every_s), time.monotonic()
    saved: list[Path] = []

    def on_step(step: int, values: dict[str, float]) -> None:
        history.rows.append({"step": step, **values, "time_s": round(time.monotonic() - started, 3)})
        tracker.log(values, step=step)
        progress(step, values)
        if step % t.save_every == 0 or step == t.steps:
            history.write()  # metrics.csv as it stands, with each saved image
            saved.append(save_png(g, run_dir / STEP_DIR / f"step_{step:04d}.png"))
            tracker.log_images([saved[-1]], step=step)

    status, final = status_fields(COMPLETED), None
    try:
        final = optimise(problem, g, t.steps, on_step)
    except KeyboardInterrupt:
        status = status_fields(STOPPED, INTERRUPTED)
        raise
    except RunError:
        status = status_fields(FAILED, NONFINITE_LOSS)
        raise
    finally:
        summary = _finish(problem, g.detach(), run_dir, history, status, final, time.monotonic() - started)
        write_summary(run_dir, summary)
        tracker.log_images([run_dir / TRIPTYCH], step=len(history.rows))
        tracker.finish({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    console.print(_report(summary, run_dir), highlight=False)
    return summary


def _finish(problem: Problem, g: torch.Tensor, run_dir: Path, history, status: dict, final: dict | None,
            seconds: float) -> dict[str, Any]:
    """result.png, the triptych, metrics.csv, curves.png, and the summary they make."""
    from dl_ray.plots import image_grid

    spec, rows = problem.spec, history.rows
    history.write()
    save_png(g, run_dir / "result.png")
    image_grid(torch.cat([problem.content, problem.style, g]).cpu(), run_dir / TRIPTYCH, nrow=3,
               labels=["content", "style", f"result (beta/alpha {_ratio(spec)})"], size=9)
    summary: dict[str, Any] = {**status, "kind": spec.kind, "features": features_label(spec),
                               "optimizer": spec.optimizer.name, "steps": spec.training.steps}
    if rows:
        plot_costs(rows, run_dir / "curves.png", f"{spec.name}: {features_label(spec)}, {spec.optimizer.name}")
        start, last = rows[0], final or rows[-1]
        summary |= {"steps_run": rows[-1]["step"], "start": {k: start[k] for k in ("j", "j_content", "j_style")},
                    "final": {k: last[k] for k in ("j", "j_content", "j_style")},
                    "j_style_drop": start["j_style"] / last["j_style"] if last["j_style"] > 0 else math.inf}
    return summary | {"time_s": round(seconds, 2), "steps_per_s": round(len(rows) / max(seconds, 1e-9), 3),
                      "size": list(g.shape[2:]), "device": problem.device.type}


def _ratio(spec: StyleTransferSpec) -> str:
    c = spec.costs
    return f"{c.beta / c.alpha:.3g}" if c.alpha else "inf"


def _report(summary: dict[str, Any], run_dir: Path) -> str:
    final = summary.get("final", {})
    return (f"{summary['status']}: J_style {summary.get('start', {}).get('j_style', float('nan')):.4e} -> "
            f"{final.get('j_style', float('nan')):.4e} ({summary.get('j_style_drop', float('nan')):.1f}x lower), "
            f"J_content {final.get('j_content', float('nan')):.4e}, {summary['time_s']:.1f} s; "
            f"run folder {run_dir} (result.png, {TRIPTYCH}, curves.png, metrics.csv, {STEP_DIR}/)")


def fit(job: "str | Path | dict[str, Any]", overrides: list[str] = (), console: Console | None = None,
        dry_run: bool = False) -> dict[str, Any]:
    """``dl-ray train`` of a style-transfer job file (or dict): check, then run; ``dry_run``: print the resolved spec."""
    import copy

    import yaml

    from dl_ray.spec import apply_override, read_job

    if isinstance(job, dict):
        raw = copy.deepcopy(job)
        for item in overrides:
            apply_override(raw, item)
    else:
        raw = read_job(job, list(overrides))
    spec = parse_style(raw)
    console = console or Console()
    problem = prepare(spec)
    if dry_run:
        print(yaml.safe_dump(spec.to_dict(), sort_keys=False), end="")
        print(f"# run folder {spec.run_dir}: " + ("finished, would report again" if _finished(spec.run_dir) else "would start"))
        return {}
    return run(spec, console, problem)


def _finished(run_dir: Path) -> bool:
    path = run_dir / "summary.json"
    return path.is_file() and json.loads(path.read_text()).get("status") == "completed"
