"""``dl-ray runs [PATH_OR_URI]`` and ``dl-ray runs compare A B ...``: run folders found again, here or in a bucket.

A run folder is one holding ``spec.yaml`` (training, RL, analysis runs), ``sweep.yaml`` (a sweep),
``summary.json`` or ``job.log`` (a submitted job). Folders are read through ``pyarrow.fs``, the layer Ray
Train writes buckets with, so a local path, ``file://``, ``s3://`` and ``gs://`` read the same way (with the
usual cloud credentials of this machine).

What a line says, and where it comes from:

* status: ``summary.json``'s, when it is newer than the last (re)start (``spec.yaml`` is rewritten at every
  start); without one, ``running`` while the folder was written to in the last 15 minutes, else ``stopped``
  (the process was killed, or its cluster went down, before it could write a summary);
* key metric: the task's headline metric on validation (and test), the RL evaluation return, or a sweep's best;
* started: the last (re)start; took: from then to the summary (or to the last write, or now while running).
"""
from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from dl_ray.errors import SpecError
from dl_ray.fmt import fit_table, num
from dl_ray.statuses import COMPLETED, FAILED, RUNNING, STOPPED

RUN_FILES = ("spec.yaml", "sweep.yaml", "summary.json", "job.log")
# Headline metrics, most telling first: a classifier's accuracy says more than its loss.
KEY_METRICS = ("accuracy", "exact_match", "bleu", "map_50", "map", "recall_at_1", "analogy", "bpc", "perplexity",
               "neg_elbo", "fd", "mse", "loss")
RL_METRICS = ("eval/return_mean", "eval/success_rate", "episodic_return")
STYLE_METRICS = ("j",)  # style transfer (dl_ray/style): the final J(G) = alpha J_content + beta J_style
# Statuses written before one vocabulary existed (dl_ray/statuses.py): (status, stop reason).
LEGACY = {"finished": (COMPLETED, None), "early_stopped": (STOPPED, "early stopping"),
          "nonfinite_loss": (FAILED, "loss NaN/inf")}
FRESH_S = 15 * 60  # a run without summary.json written to this recently is taken as still running
UNFINISHED_TRIALS = ("pending", "running", "paused")


class Folder:
    """A folder on a pyarrow filesystem (local, file://, s3://, gs://), read-only."""

    def __init__(self, filesystem, path: str, shown: str):
        self.fs, self.path, self.shown = filesystem, path.rstrip("/") or "/", shown.rstrip("/") or "/"

    @classmethod
    def open(cls, target: str) -> Folder:
        """The folder at ``target``; a missing folder or an unreadable bucket is one SpecError line."""
        from pyarrow import fs

        from dl_ray.cluster import storage
        from dl_ray.spec import STORAGE_SCHEMES

        uri = target if "://" in target else str(Path(target).expanduser().absolute())
        if uri.startswith(tuple(f"{scheme}://" for scheme in STORAGE_SCHEMES)):
            storage.check_bucket(uri, "runs")  # credentials found, bucket reachable and there
        try:
            filesystem, path = fs.FileSystem.from_uri(uri)
            kind = filesystem.get_file_info(path).type
        except (OSError, ValueError) as e:  # pyarrow: unknown scheme, no credentials, unreachable endpoint
            raise SpecError(f"runs: cannot read {target}: {_first_line(e)}") from None
        if kind == fs.FileType.NotFound:
            raise SpecError(f"runs: no such folder: {target}")
        if kind != fs.FileType.Directory:
            raise SpecError(f"runs: {target} is a file; give a run folder or the folder holding runs")
        return cls(filesystem, path, target)

    def child(self, name: str) -> Folder:
        return Folder(self.fs, f"{self.path}/{name}", f"{self.shown}/{name}")

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def entries(self) -> dict[str, Any]:
        """Direct children by name: pyarrow ``FileInfo`` (type, mtime)."""
        from pyarrow import fs

        infos = self.fs.get_file_info(fs.FileSelector(self.path, recursive=False))
        return {info.base_name: info for info in infos}

    def read_text(self, name: str) -> str:
        with self.fs.open_input_stream(f"{self.path}/{name}") as f:
            return f.read().decode()


@dataclass
class Run:
    """One run folder, read back: what ``dl-ray runs`` prints a line of."""

    folder: Folder
    kind: str
    status: str
    stop_reason: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    started: float | None = None
    took: float | None = None
    metric: str = "-"
    """The key metric as shown: ``val/accuracy 0.968 test 0.97``."""
    metric_short: str = "-"
    """The same without the test figure, for narrow terminals."""

    @property
    def name(self) -> str:
        return self.folder.name

    @cached_property
    def rows(self) -> list[dict[str, Any]]:
        """metrics.csv as rows of numbers (empty cells left out); read once (a bucket answers each read slowly)."""
        if "metrics.csv" not in self.folder.entries():
            return []
        rows = csv.DictReader(io.StringIO(self.folder.read_text("metrics.csv")))
        return [{k: _number(v) for k, v in row.items() if v not in ("", None)} for row in rows]

    def final(self, metric: str) -> float | None:
        """The run's figure for ``metric``: its summary's (best weights'), else the last one metrics.csv holds."""
        value = (self.summary.get("final") or {}).get(metric, self.summary.get(metric))
        if isinstance(value, (int, float)):
            return value
        values = [row[metric] for row in self.rows if isinstance(row.get(metric), (int, float))]
        return values[-1] if values else None


def read_run(folder: Folder, now: float | None = None) -> Run | None:
    """The run in ``folder``, or None when it is not a run folder."""
    entries = folder.entries()
    if not any(name in entries for name in RUN_FILES):
        return None
    mtime = {name: info.mtime.timestamp() for name, info in entries.items() if info.mtime is not None}
    start_file = "sweep.yaml" if "sweep.yaml" in entries else "spec.yaml"
    spec = (yaml.safe_load(folder.read_text(start_file)) or {}) if start_file in entries else {}
    summary = _json(folder, "summary.json") if "summary.json" in entries else None
    kind = "sweep" if start_file == "sweep.yaml" else str((summary or {}).get("kind") or spec.get("kind") or
                                                          ("supervised" if spec else "-"))
    run = Run(folder, kind, RUNNING, spec=spec, started=mtime.get(start_file, min(mtime.values(), default=None)))
    if kind == "sweep":
        _read_sweep(run, entries, mtime)
    elif summary is not None and mtime.get("summary.json", 0) >= (run.started or 0):  # else: the attempt before
        run.summary = summary
        run.status, run.stop_reason = LEGACY.get(summary.get("status"), (summary.get("status", COMPLETED), summary.get("stop_reason")))
        run.took = mtime["summary.json"] - run.started if run.started else None
    if run.status == RUNNING:
        _still_running(run, max(mtime.values(), default=0), time.time() if now is None else now)
    if run.metric == "-":
        run.metric, run.metric_short = _key_metric(run)
    return run


def _still_running(run: Run, newest: float, now: float) -> None:
    """A run with no summary yet: running while it writes, stopped once it has been silent for FRESH_S."""
    if now - newest > FRESH_S:
        run.status, run.stop_reason = STOPPED, "no summary.json: killed, or its cluster went down"
    if run.started is not None:
        run.took = (now if run.status == RUNNING else newest) - run.started


def _read_sweep(run: Run, entries: dict[str, Any], mtime: dict[str, float]) -> None:
    """A sweep's status and best trial, from its results.csv (written when the sweep ends or is stopped)."""
    if "results.csv" not in entries or mtime["results.csv"] < (run.started or 0):
        return
    rows = list(csv.DictReader(io.StringIO(run.folder.read_text("results.csv"))))
    unfinished = sum(r.get("status") in UNFINISHED_TRIALS for r in rows)
    run.status, run.stop_reason = (STOPPED, f"{unfinished} trial(s) unfinished") if unfinished else (COMPLETED, None)
    run.took = mtime["results.csv"] - run.started if run.started else None
    tune = run.spec.get("tune") or {}
    metric = tune.get("metric")
    scores = [_number(r.get(metric) or "") for r in rows]
    scores = [s for s in scores if isinstance(s, (int, float)) and s == s]
    if metric and scores:
        mode = tune.get("mode") or ("min" if "loss" in metric else "max")
        best = min(scores) if mode == "min" else max(scores)
        run.metric = f"best {metric} {num(best)} of {len(rows)}"
        run.metric_short = f"best {metric} {num(best)}"


def _key_metric(run: Run) -> tuple[str, str]:
    """(the headline metric with its validation and test figures, the same without test)."""
    latest = dict(run.summary.get("final") or {})
    latest |= {k: v for k, v in run.summary.items() if isinstance(v, (int, float)) and "/" in k}
    if not latest:  # still running: the last metrics.csv row
        rows = run.rows
        latest = rows[-1] if rows else {}
    name = headline(latest, run.spec)
    if name is None:
        return "-", "-"
    short = f"{name} {num(latest[name])}"
    test = latest.get(name.replace("val/", "test/", 1)) if name.startswith("val/") else None
    return (f"{short} test {num(test)}" if isinstance(test, (int, float)) else short), short


def headline(values: dict[str, Any], spec: dict[str, Any]) -> str | None:
    """The metric that says most about a run: the early-stopping metric a job chose, else by KEY_METRICS / RL_METRICS."""
    chosen = ((spec.get("regularization") or {}).get("early_stopping") or {}).get("metric")
    names = [chosen] if chosen and chosen != "val/loss" else []
    names += [f"val/{m}" for m in KEY_METRICS] + list(RL_METRICS) + list(STYLE_METRICS)
    return next((n for n in names if isinstance(values.get(n), (int, float))), None)


def find_runs(target: str) -> list[Run]:
    """The run at ``target`` if it is one (a sweep: its trials), else the runs directly under it, oldest first."""
    folder = Folder.open(target)
    here = read_run(folder)
    if here is not None and here.kind != "sweep":
        return [here]
    children = [folder.child(name) for name, info in sorted(folder.entries().items()) if info.type.name == "Directory"]
    runs = [run for run in map(read_run, children) if run is not None]
    return sorted(runs, key=lambda r: r.started or 0)


def list_lines(runs: list[Run], width: int) -> list[str]:
    """One line per run, fitting ``width``: the test figure, the start time, spacing, then the duration go before a
    name is ever cut (a name longer than the width still shows whole)."""
    stages = ((True, True, True, 2), (False, True, True, 2), (False, False, True, 2), (False, False, True, 1),
              (False, False, False, 1))
    for keep_test, keep_started, keep_took, gap in stages:
        columns = ["run", "kind", "status", *(["started"] if keep_started else []), *(["took"] if keep_took else []),
                   "key metric"]
        rows = [[r.name, r.kind, r.status, *([_when(r.started)] if keep_started else []),
                 *([duration(r.took)] if keep_took else []), r.metric if keep_test else r.metric_short] for r in runs]
        lines = _aligned(columns, rows, gap)
        if max(map(len, lines)) <= width:
            break
    return lines


def _aligned(columns: list[str], rows: list[list[str]], gap: int) -> list[str]:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    return [(" " * gap).join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [columns, *rows]]


def compare(targets: list[str], metrics: list[str] | None, out: Path, width: int) -> tuple[Any, list[str], Path]:
    """(a table of the metrics' figures per run, the metrics drawn as curves, the PNG overlaying them)."""
    runs = []
    for target in targets:
        run = read_run(Folder.open(target))
        if run is None:
            raise SpecError(f"runs compare: {target} is not a run folder (no {', '.join(RUN_FILES)})")
        if run.kind == "sweep":
            raise SpecError(f"runs compare: {target} is a sweep; compare its trials (`dl-ray runs {target}` lists them)")
        runs.append(run)
    metrics = metrics or default_metrics(runs)
    labels = _labels(runs, targets)
    rows = [[label, run.status, *(num(run.final(m)) for m in metrics)] for label, run in zip(labels, runs)]
    table, dropped = fit_table(["run", "status", *metrics], rows, width, keep=2, right=metrics)
    if dropped:
        table.caption = f"not shown (too wide): {', '.join(dropped)}; choose fewer with --metrics"
    return table, plot_curves(runs, labels, metrics, out), out


def default_metrics(runs: list[Run]) -> list[str]:
    """The first run's headline metric on validation and test, and the validation loss."""
    run = runs[0]
    values = dict(run.summary.get("final") or {}) | {k: v for k, v in run.summary.items() if "/" in k}
    rows = run.rows
    values |= rows[-1] if rows else {}
    name = headline(values, run.spec)
    if name is None:
        raise SpecError(f"runs compare: {run.folder.shown} has no metrics yet; name some with --metrics")
    wanted = [name]
    if name.startswith("val/"):
        wanted += [name.replace("val/", "test/", 1), "val/loss"]
    return [m for m in dict.fromkeys(wanted) if any(r.final(m) is not None for r in runs)]


def plot_curves(runs: list[Run], labels: list[str], metrics: list[str], out: Path) -> list[str]:
    """One panel per metric with a curve (against epoch, or env steps for RL), every run overlaid; returns the
    metrics drawn (one figure per run, such as a test score, makes no curve)."""
    from dl_ray.plots import pyplot

    plt = pyplot()
    histories = [r.rows for r in runs]
    panels = [m for m in metrics if any(sum(m in row for row in rows) > 1 for rows in histories)] or metrics[:1]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], panels):
        for label, rows in zip(labels, histories):
            points = [(_x(row, i), row[metric]) for i, row in enumerate(rows) if isinstance(row.get(metric), (int, float))]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", markersize=3, label=label)
        ax.set(title=metric, xlabel="env steps" if histories and any("env_steps" in r for h in histories for r in h) else "epoch")
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return panels


def _x(row: dict[str, Any], index: int) -> float:
    return row.get("epoch", row.get("env_steps", index + 1))


def _labels(runs: list[Run], targets: list[str]) -> list[str]:
    """Folder names, or the paths as given where two runs share a name (trials of two sweeps...)."""
    names = [r.name for r in runs]
    return [name if names.count(name) == 1 else target for name, target in zip(names, targets)]


def _json(folder: Folder, name: str) -> dict[str, Any]:
    try:
        data = json.loads(folder.read_text(name))
    except json.JSONDecodeError as e:
        raise SpecError(f"runs: {folder.shown}/{name} is not valid JSON ({e.msg}, line {e.lineno})") from None
    return data if isinstance(data, dict) else {}


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _when(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%m-%d %H:%M") if timestamp else "-"


def duration(seconds: float | None) -> str:
    """``47s``, ``12m05s``, ``3h25m``, ``2d04h``: at most 6 characters."""
    if seconds is None:
        return "-"
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --- the command line: dl-ray runs [PATH_OR_URI] | dl-ray runs compare A B ... [--metrics M,...] [--out PNG]


def add_command(sub) -> None:
    runs = sub.add_parser("runs", help="list run folders (a local path or an s3:// / gs:// bucket); "
                                       "`dl-ray runs compare A B ...` compares runs")
    runs.add_argument("targets", nargs="*", metavar="PATH_OR_URI",
                      help="a folder of runs (default: runs), a run folder, or a sweep folder (its trials); "
                           "after `compare`: two or more run folders")
    runs.add_argument("--metrics", help="compare: comma-separated metrics, e.g. val/loss,val/accuracy "
                                        "(default: the headline metric on val and test, and val/loss)")
    runs.add_argument("--out", type=Path, default=Path("runs_compare.png"),
                      help="compare: where the PNG of overlaid curves goes (default: runs_compare.png here)")


def command(args, console) -> int:
    targets = list(args.targets)
    if targets[:1] == ["compare"]:
        if len(targets) < 3:
            raise SpecError("runs compare: give two or more run folders, e.g. dl-ray runs compare runs/a runs/b")
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
        table, drawn, png = compare(targets[1:], metrics, args.out, console.width)
        console.print(table)
        console.print(f"curves of {', '.join(drawn)}: {png.absolute()}", highlight=False, soft_wrap=True)
        return 0
    if len(targets) > 1:
        raise SpecError(f"runs: one folder at a time (got {len(targets)}); to compare runs: dl-ray runs compare A B ...")
    if args.metrics:
        raise SpecError("--metrics: only for `dl-ray runs compare A B ...`")
    target = targets[0] if targets else "runs"
    runs = find_runs(target)
    if not runs:
        console.print(f"no run folders in {target}", highlight=False, soft_wrap=True)
        return 0
    for line in list_lines(runs, console.width):
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    return 0
