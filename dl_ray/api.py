"""The Python API, for notebooks and scripts: what the ``dl-ray`` commands do, as functions.

::

    import dl_ray

    summary = dl_ray.fit("jobs/mnist_lenet.yaml", ["training.epochs=3"], quiet=True)
    print(summary["final"]["test/accuracy"])

    run = dl_ray.load("runs/mnist_lenet")       # spec, model (best checkpoint, eval mode), summary, history
    run.metrics[["epoch", "train/loss", "val/loss"]]   # the history as a pandas DataFrame
    logits = run.model(run.data().test.tensors[0][:8])

    dl_ray.evaluate("runs/mnist_lenet")         # as `dl-ray eval`: confusion matrix, mistakes.png, ...
    dl_ray.registered("supervised")             # {'supervised': ['lenet5', 'mlp', ...], 'datasets': [...]}

Bad input raises :class:`dl_ray.errors.SpecError` (the CLI's exit code 2) and a run that fails raises
:class:`dl_ray.errors.RunError` (exit code 1), each with the one-line message the CLI prints. The CLI
(:mod:`dl_ray.cli`) is built on these functions. Importing this module imports nothing heavy: torch, Ray
and the model families load on first use.
"""
from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal

from dl_ray.errors import RunError, SpecError

if TYPE_CHECKING:  # pragma: no cover
    import pandas
    from rich.console import Console

    from dl_ray.data import DataBundle
    from dl_ray.spec import JobSpec

__all__ = ["Run", "RunError", "SpecError", "evaluate", "fit", "job_spec", "load", "registered", "run_folder"]

RL_KINDS = ("dqn", "q_learning")
GENERATIVE_KINDS = ("autoencoder", "vae", "gan", "language_model")  # eval: test metrics, samples drawn again
FITS = {  # what each sort of run takes besides the run folders (dl-ray eval flags)
    "supervised": ("weights",),
    "seq2seq": ("beam", "alpha", "weights"),
    "generative": ("weights",),
    "detection": ("weights",),
    "metric_learning": ("weights",),
    "rl": ("episodes", "epsilon", "weights", "video", "seed"),
}


def _console(console: "Console | None", quiet: bool) -> "Console":
    from rich.console import Console

    return console or Console(quiet=quiet, soft_wrap=not sys.stdout.isatty())


# ---------------------------------------------------------------- training


def job_spec(job: "str | Path | dict[str, Any] | JobSpec", overrides: Iterable[str] = ()) -> "JobSpec":
    """The resolved, validated job (every default filled in) of a job file, a dict or a spec, with ``overrides``
    (``"a.b=value"``, as ``--set``) applied. Nothing is started or written; bad input raises SpecError."""
    from dl_ray.spec import JobSpec, apply_override, load_spec, parse_spec, writable

    if isinstance(job, (str, Path)):
        return load_spec(job, list(overrides))
    if isinstance(job, JobSpec):
        job = job.to_dict()
    if not isinstance(job, dict):
        raise SpecError(f"job: expected a job file path, a dict or a JobSpec, got {type(job).__name__}")
    raw = copy.deepcopy(job)
    for item in overrides:
        apply_override(raw, item)
    return writable(parse_spec(raw))


def fit(job: "str | Path | dict[str, Any] | JobSpec", overrides: Iterable[str] = (), quiet: bool = False, *,
        verbose: bool = False, console: "Console | None" = None) -> dict[str, Any]:
    """Train a job (kind supervised, autoencoder, vae or gan) as ``dl-ray train`` does, and return its summary.

    ``job``: a job file path, a dict of the same sections, or a :class:`~dl_ray.spec.JobSpec`; ``overrides``:
    ``["training.epochs=3", ...]`` as ``--set``. The run folder is ``<storage.path>/<name>``; calling this again
    resumes (or, finished, reports again). ``quiet``: print nothing (no progress, no final table); ``verbose``:
    show Ray's own logs. Returns the summary (exactly what the run folder's ``summary.json`` holds: status,
    ``final`` train/val/test metrics, best epoch, ...). Raises SpecError for bad input (nothing is started)
    and RunError when the run fails (e.g. the loss became NaN)."""
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    if is_style_transfer(job):  # kind style_transfer: pixels optimised, no dataset (dl_ray/style)
        from dl_ray.style.run import fit as style_fit

        return style_fit(job, list(overrides), _console(console, quiet))
    spec = job_spec(job, overrides)
    if spec.scaling.num_workers > 0:  # Ray Train workers join RAY_ADDRESS: a bad one is refused before the run folder is made
        from dl_ray.ray_address import driver_address

        driver_address()
    from dl_ray.train.runner import run

    return run(spec, _console(console, quiet), verbose=verbose)


def is_style_transfer(job: Any) -> bool:
    """A style-transfer job (a file or dict of kind style_transfer), which dl_ray.style runs."""
    from dl_ray.spec import read_mapping

    if isinstance(job, (str, Path)) and Path(job).is_file():
        job = read_mapping(job)
    return isinstance(job, dict) and job.get("kind") == "style_transfer"


# ---------------------------------------------------------------- reading runs back


@dataclass
class Run:
    """A run folder read back (:func:`load`)."""

    run_dir: Path
    kind: str
    """The job's kind: supervised, autoencoder, vae, gan, dqn or q_learning."""
    spec: Any
    """The resolved job it was started with (a JobSpec; an RLJobSpec for dqn / q_learning runs)."""
    model: Any
    """The model with the checkpoint's weights, in eval mode (None for RL runs: see their best_weights.pt)."""
    checkpoint: Path | None
    """The checkpoint folder the model was loaded from."""
    summary: dict[str, Any] | None
    """``summary.json`` (None while the run has not finished)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """``metrics.csv``: one dict per row (epoch), numbers as numbers."""

    @property
    def metrics(self) -> "pandas.DataFrame":
        """The history as a pandas DataFrame, one row per epoch."""
        import pandas as pd

        return pd.DataFrame(self.history)

    def data(self) -> "DataBundle":
        """The job's dataset (train / val / test splits), built as the run built it."""
        from dl_ray.data import build_data

        if self.kind in RL_KINDS:
            raise SpecError(f"{self.run_dir.name} is a {self.kind} run: its data are its environment ({self.spec.env.id})")
        return build_data(self.spec.data)


def run_folder(target: str | Path, require_run: bool = True) -> tuple[Path, str]:
    """(run folder, job kind) of a run given as its folder or as its job file; SpecError when it holds no run
    (``require_run=False``: a job file's folder and kind even before it has run)."""
    from dl_ray.kinds import COMMANDS, kind_of
    from dl_ray.spec import read_job, read_mapping

    path, kind = Path(target), None
    if path.is_file():
        kind = kind_of(read_job(path))
        if COMMANDS[kind] == "tune":
            raise SpecError(f"eval: {path} is a sweep: evaluate one of its trials (a run folder in its sweep folder), "
                            "or train its best.yaml and evaluate that run")
        if COMMANDS[kind] == "dqn":
            from dl_ray.rl.spec import load_rl_spec

            run_dir = load_rl_spec(path).run_dir
        else:
            from dl_ray.spec import load_spec

            run_dir = load_spec(path).run_dir
    elif path.is_dir():
        run_dir = path.absolute()
    else:
        raise SpecError(f"eval: {target}: no such run folder or job file")
    if not (run_dir / "spec.yaml").is_file():
        if kind is not None and not require_run:
            return run_dir, kind
        if (run_dir / "results.csv").is_file():
            raise SpecError(f"eval: {run_dir} is a sweep folder (no spec.yaml): evaluate one of its trials' run folders")
        command = "dqn" if kind in RL_KINDS else "train" if kind else "train (or dqn)"
        raise SpecError(f"eval: {run_dir} holds no run (no spec.yaml); run its job first: dl-ray {command} JOB")
    return run_dir, kind or kind_of(read_mapping(run_dir / "spec.yaml", "run spec"))


def load(run_dir: str | Path, which: Literal["best", "last"] = "best", device: str = "cpu") -> Run:
    """A run folder (or its job file) read back: spec, model, summary and metrics history.

    ``which``: the best checkpoint (by the early-stopping metric; the latest when there is none) or the
    latest. The model is rebuilt from the checkpoint alone (no data is generated) and is in eval mode."""
    import yaml

    from dl_ray.tracking import History, read_summary

    run_dir, kind = run_folder(run_dir)
    history = History(run_dir / "metrics.csv")
    history.load_until(sys.maxsize)
    raw = yaml.safe_load((run_dir / "spec.yaml").read_text())
    if kind in RL_KINDS:
        from dl_ray.rl.spec import parse_rl_spec

        spec, model, checkpoint = parse_rl_spec(raw), None, None
    else:
        from dl_ray.runs import checkpoint_of, load_model, load_spec_of

        checkpoint = checkpoint_of(run_dir, which)
        model, spec = load_model(checkpoint, spec=load_spec_of(run_dir), device=device)
    return Run(run_dir, kind, spec, model, checkpoint, read_summary(run_dir), history.rows)


def registered(kind: str | None = None) -> dict[str, list[str]]:
    """Registered model names by job kind (``{"supervised": [...], "dqn": [...], ...}``), and ``"datasets"``.

    ``kind``: only that kind's models (and the datasets)."""
    import dl_ray.data  # noqa: F401  (registers the datasets)
    import dl_ray.models  # noqa: F401  (registers the model families)
    from dl_ray.kinds import COMMANDS
    from dl_ray.registry import DATASETS, MODELS

    by_kind: dict[str, list[str]] = {}
    for name in MODELS.names():
        by_kind.setdefault(MODELS[name].kind, []).append(name)
    if kind is not None:
        allowed = [k for k in COMMANDS if k != "sweep"]
        if kind not in allowed:
            raise SpecError(f"kind: unknown kind {kind!r}; allowed: {', '.join(allowed)}")
        by_kind = {kind: by_kind.get(kind, [])}
    order = list(COMMANDS)
    ordered = dict(sorted(by_kind.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])))
    return ordered | {"datasets": DATASETS.names()}


# ---------------------------------------------------------------- evaluation


def evaluate(run: str | Path, *, weights: Literal["best", "last"] | None = None, beam: int | None = None,
             alpha: float | None = None, episodes: int | None = None, epsilon: float | None = None,
             video: bool = False, seed: int | None = None, quiet: bool = False, console: "Console | None" = None,
             device: str = "cpu") -> dict[str, Any]:
    """Evaluate one run as ``dl-ray eval`` does, by its kind, and return the report it writes to the run folder.

    * supervised classifier / regressor: test metrics, confusion matrix and per-class accuracy,
      ``confusion.png``, ``mistakes.png`` (images), ``eval_test.json`` (:mod:`dl_ray.eval_supervised`);
    * seq2seq (``data.name: dates``): greedy vs beam search (``beam``, ``alpha``), BLEU, error analysis,
      attention maps, ``eval.json`` (:mod:`dl_ray.eval_seq2seq`);
    * autoencoder / vae / gan: test metrics and the family's pictures again, ``eval_test.json``;
    * dqn / q_learning: evaluation episodes again (``episodes``, ``epsilon``, ``video``, ``seed``),
      ``eval_<weights>.json`` (:mod:`dl_ray.rl.evaluate`).

    ``weights``: the best checkpoint (default) or the latest (``"last"``); for DQN the best evaluation's weights
    or the last checkpoint's. An option that does not fit the run's kind raises SpecError."""
    return evaluate_runs([run], weights=weights, beam=beam, alpha=alpha, episodes=episodes, epsilon=epsilon,
                         video=video, seed=seed, console=_console(console, quiet), device=device)[0]


def evaluate_runs(runs: Iterable[str | Path], *, weights: str | None = None, beam: int | None = None,
                  alpha: float | None = None, episodes: int | None = None, epsilon: float | None = None,
                  video: bool = False, seed: int | None = None, console: "Console | None" = None,
                  device: str = "cpu") -> list[dict[str, Any]]:
    """:func:`evaluate` of several runs of one sort (``dl-ray eval RUN...``; seq2seq runs are also compared).

    Every run and option is checked before anything is evaluated."""
    console = _console(console, False)
    options = {"beam": beam, "alpha": alpha, "episodes": episodes, "epsilon": epsilon, "weights": weights,
               "video": video or None, "seed": seed}
    given = [k for k, v in options.items() if v is not None]
    located = [run_folder(r, require_run=False) for r in runs]
    if style := next((d for d, kind in located if kind == "style_transfer"), None):  # dl_ray/style: pictures, no model
        raise SpecError(f"eval: {style.name} is a style-transfer run: nothing to evaluate; its result is in its folder "
                        "(result.png, content_style_result.png, curves.png, summary.json)")
    for run_dir, kind in located:
        if not (run_dir / "spec.yaml").is_file():  # a job file not run yet: what its kind alone rules out
            _check_options(_sort_of_kind(kind), run_dir, kind, given, provisional=True)
    found = [(run_dir, kind, _sort_of(run_dir, kind)) for run_dir, kind in (run_folder(d) for d, _ in located)]
    sorts = {sort for *_, sort in found}
    if len(sorts) > 1:
        raise SpecError("eval: give runs of one sort, not a mix: " + ", ".join(f"{d.name} ({s})" for d, _, s in found))
    sort = sorts.pop()
    _check_options(sort, *found[0][:2], given)
    if sort == "rl":
        from dl_ray.rl.evaluate import evaluate_run

        if episodes is not None and episodes < 1:
            raise SpecError(f"eval: --episodes must be >= 1 (got {episodes})")
        if epsilon is not None and not 0 <= epsilon <= 1:
            raise SpecError(f"eval: --epsilon must be in [0, 1] (got {epsilon})")
        return [evaluate_run(d, episodes, epsilon, weights or "best", video, seed, console) for d, *_ in found]
    if sort == "seq2seq":
        from dl_ray.eval_seq2seq import evaluate_runs as decode_runs

        return decode_runs([d for d, *_ in found], 3 if beam is None else beam, 0.7 if alpha is None else alpha,
                           console, weights or "best")
    if sort == "generative":
        from dl_ray.eval_generative import evaluate_run
    elif sort == "detection":
        from dl_ray.eval_detection import evaluate_run
    elif sort == "metric_learning":
        from dl_ray.eval_siamese import evaluate_run
    else:
        from dl_ray.eval_supervised import evaluate_run
    return [evaluate_run(d, weights or "best", console, device) for d, *_ in found]


def _sort_of_kind(kind: str) -> str:
    """rl, generative, detection, metric_learning, or supervised (which may still be seq2seq: see :func:`_sort_of`)."""
    if kind in ("detection", "metric_learning"):
        return kind
    return "rl" if kind in RL_KINDS else "generative" if kind in GENERATIVE_KINDS else "supervised"


def _sort_of(run_dir: Path, kind: str) -> str:
    """How a run is evaluated: rl, generative, seq2seq (a supervised run on sequences) or supervised."""
    sort = _sort_of_kind(kind)
    return "seq2seq" if sort == "supervised" and _data_task(run_dir) == "seq2seq" else sort


def _data_task(run_dir: Path) -> str:
    """The run's data task (multiclass, binary, regression, seq2seq): its summary's, else its checkpoint's."""
    from dl_ray.tracking import read_summary

    task = (read_summary(run_dir) or {}).get("task")
    if task:
        return task
    from dl_ray.runs import checkpoint_of, load_spec_of
    from dl_ray.train import checkpoints

    if not checkpoints.saved(run_dir):
        raise SpecError(f"eval: {run_dir} has no checkpoint yet; train it first: dl-ray train JOB")
    io = checkpoints.read(checkpoint_of(run_dir)).get("io")
    if io:
        return io["task"]
    from dl_ray.data import build_data

    return build_data(load_spec_of(run_dir).data).task


def _check_options(sort: str, run_dir: Path, kind: str, given: list[str], provisional: bool = False) -> None:
    """Options that do not fit this sort of run: one SpecError line naming what does. ``provisional``: a job
    not run yet, known by its kind only (a supervised one may be seq2seq: it may take seq2seq's options)."""
    fits = FITS["seq2seq"] if provisional and sort == "supervised" else FITS[sort]
    misfits = [k for k in given if k not in fits]
    if not misfits:
        return
    if provisional:
        what = kind
    elif sort == "supervised":
        what = f"supervised ({_data_task(run_dir)})"
    else:
        what = {"seq2seq": "seq2seq"}.get(sort, kind)
    takes = ("--episodes, --seed (a Q-learning run plays its greedy table)" if kind == "q_learning"
             else ", ".join(f"--{k}" for k in fits))
    if {"beam", "alpha"} & set(misfits):
        raise SpecError(f"eval: --beam and --alpha decode seq2seq runs; {run_dir.name} is a {what} run, which takes {takes}")
    flags = ", ".join(f"--{k}" for k in misfits)
    raise SpecError(f"eval: {flags} {'is' if len(misfits) == 1 else 'are'} for RL runs (dl-ray dqn); "
                    f"{run_dir.name} is a {what} run, which takes {takes}")
