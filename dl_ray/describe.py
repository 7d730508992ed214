"""``dl-ray describe JOB``: a job's model, layer by layer, on the job's data, with nothing trained or written.

Per layer: output shape, parameters (and their share of the total: the course's point that the last fully
connected layers hold most of them), multiply-adds per example and the receptive field, then the totals. How
each is measured: :mod:`dl_ray.layer_summary`.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from dl_ray.layer_summary import Field, Receptive, Summary, by_hooks, parameter_counts, shape_text, summarize

WIDTH = 80


# ---------------------------------------------------------------- the table


def compact(n: float) -> str:
    """61100840 -> '61.1M', 3200000000 -> '3.2G', 156 -> '156': three significant digits at most."""
    if n < 1000:
        return str(int(n))
    for unit in ("K", "M", "G", "T", "P"):
        n /= 1000
        if n < 999.5 or unit == "P":
            return f"{n:.3g}{unit}"
    raise AssertionError("unreachable")


def field_text(f: Receptive) -> str:
    return f.text() if isinstance(f, Field) else f if isinstance(f, str) else "-"


def clip(text: str, width: int, left: bool = False) -> str:
    """``text`` in at most ``width`` characters; too long, it loses its start (names) or its end (types)."""
    if len(text) <= width:
        return text
    return "…" + text[-(width - 1):] if left else text[: width - 1] + "…"


COLUMNS = ("layer", "type", "output", "params", "share", "mult-adds", "recept.")


def table(summary: Summary, width: int = WIDTH) -> str:
    """The rows as a plain table that fits ``width`` columns, then the totals."""
    total = summary.params or 1
    cells = [(r.name, r.kind, r.shape, compact(r.params) if r.params else "-",
              f"{100 * r.params / total:.1f}%" if r.params else "-", compact(r.macs) if r.macs else "-",
              field_text(r.field)) for r in summary.rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(COLUMNS)]
    widths[1], widths[2] = min(widths[1], 14), min(widths[2], 14)
    widths[0] = max(8, min(widths[0], width - sum(widths[1:]) - 2 * (len(COLUMNS) - 1)))
    right = {3, 4, 5, 6}

    def line(values) -> str:
        parts = [clip(v, w, left=i == 0) for i, (v, w) in enumerate(zip(values, widths))]
        return "  ".join(p.rjust(w) if i in right else p.ljust(w) for i, (p, w) in enumerate(zip(parts, widths))).rstrip()

    lines = [line(COLUMNS), "  ".join("-" * w for w in widths)] + [line(c) for c in cells]
    return "\n".join(lines + totals(summary))


def totals(s: Summary) -> list[str]:
    out = [f"total: {compact(s.params)} parameters ({s.params:,}; {compact(s.trainable)} trainable, "
           f"{s.params * 4 / 2**20:.1f} MiB in fp32)",
           f"multiply-adds: {compact(s.macs)} per {s.input_shape} example"]
    if s.fc_params:
        fc_macs = sum(r.macs for r in s.rows if r.fully_connected)
        out.append(f"fully connected layers: {100 * s.fc_params / (s.params or 1):.1f}% of the parameters "
                   f"({compact(s.fc_params)}), {100 * fc_macs / (s.macs or 1):.1f}% of mult-adds")
    listed = sum(r.params for r in s.rows)
    if listed != s.params:
        out.append(f"not used in this forward pass: {compact(s.params - listed)} parameters")
    if s.hidden:
        out.append(f"not listed (element-wise, no parameters): {', '.join(f'{n} {k}' for k, n in s.hidden.most_common())}")
    if s.traced:
        out.append(f"receptive fields: not traced by torch.fx ({s.traced})")
    return [wrap(line) for line in out]


def wrap(text: str, width: int = WIDTH) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width, subsequent_indent="  ", break_on_hyphens=False))


# ---------------------------------------------------------------- a job's networks


def network_inputs(task: nn.Module, batch: Any) -> dict[str, tuple[tuple, dict]]:
    """The (args, kwargs) each of the task's networks is first called with while evaluating ``batch``."""
    from dl_ray.models.task import Task

    nets = task.networks() if isinstance(task, Task) else {"model": task}
    seen: dict[str, tuple[tuple, dict]] = {}

    def capture(name: str) -> Callable:
        def hook(_m, args, kwargs):
            seen.setdefault(name, (args, kwargs))

        return hook

    handles = [net.register_forward_pre_hook(capture(name), with_kwargs=True) for name, net in nets.items()]
    task.eval()
    try:
        with torch.no_grad():
            task.eval_step(batch, task.evaluation(), nets)
    finally:
        for h in handles:
            h.remove()
    return seen


def job_summaries(job: Any, overrides: list[str] = ()) -> tuple[Any, Any, list[Summary]]:
    """(spec, data, a Summary per network) of a job: its model built on its data as `dl-ray train` builds them,
    each network described on the inputs it gets from one example in evaluation. Nothing is written."""
    from dl_ray import api
    from dl_ray.data import build_data
    from dl_ray.train.runner import validate

    spec = api.job_spec(job, overrides)
    torch.manual_seed(spec.training.seed)
    task = validate(spec)  # SpecError for data or a model that does not fit, as `dl-ray train`; writes nothing
    data = build_data(spec.data)
    batch = data.example_batch(1)
    inputs = network_inputs(task, batch)
    nets = task.networks()
    summaries = [summarize(nets[name], args, kwargs, name) for name, (args, kwargs) in inputs.items()]
    if not summaries:  # e.g. a VAE whose evaluation runs its encoder and decoder, never its forward
        summaries = [evaluation_summary(task, batch)]
    return spec, data, summaries


def evaluation_summary(task: nn.Module, batch: Any) -> Summary:
    """The layers one evaluation step calls, from hooks, for a task that never calls a network as a whole."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    summary = Summary("model", shape_text(x), **parameter_counts(task),
                      traced="its evaluation calls its layers, never a network as a whole")
    with torch.no_grad():
        by_hooks(task, lambda: task.eval_step(batch, task.evaluation(), task.networks()), summary)
    return summary


def describe_job(job: Any, overrides: list[str] = (), width: int = WIDTH) -> str:
    """The text ``dl-ray describe`` prints: each network of the job's model on one example of its data."""
    spec, data, summaries = job_summaries(job, overrides)
    parts = [wrap(f"{spec.name}: {spec.model.name} on {spec.data.name}, input {'x'.join(map(str, data.input_shape))}", width)]
    for summary in summaries:
        if len(summaries) > 1:
            parts.append(f"\n{summary.name}")
        parts.append(table(summary, width))
    return "\n".join(parts)
