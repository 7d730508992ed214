"""The sweep file: a job (inline, or ``base:`` another job file) plus a ``tune:`` section.

    name: mnist_lr_decay_dropout        # the sweep: its folder, W&B group and trial names
    base: ../mnist_lenet.yaml           # the job to sweep, relative to this file (optional)
    training: {epochs: 12}              # any job section given here overrides the base
    tune:
      metric: val/accuracy
      scheduler: asha
      num_samples: 16
      space:                            # any dotted field of the job
        optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}
        schedule.name: {choice: [constant, exponential, cosine]}
        regularization.dropout: {uniform: [0.0, 0.5]}

Every problem becomes one :class:`SpecError` line naming ``tune.<field>`` or
``tune.space.<path>``, before Ray starts.
"""
from __future__ import annotations

import copy
import difflib
import importlib
import os
import random
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dl_ray import kinds
from dl_ray.spec import (STORAGE_SCHEMES, JobSpec, SpecError, StorageSpec, apply_override, describe, parse_spec, read_mapping,
                          set_path)

DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice", "grid")
SWEEPABLE = ("model", "data", "optimizer", "schedule", "regularization", "training")
SETTINGS = "settings."  # evaluate trials: space keys for the evaluator, not for the job


class SweptKind(Protocol):
    """A job kind whose trials run its own code, not the generic training loop (the training kinds need none).

    A module implements it (``dl_ray.style.sweep``): its functions are what Ray ships to the trials. Its trials
    report once, at their end."""

    SWEEPABLE: tuple[str, ...]
    """The job's top-level sections a ``tune.space`` key may start with."""

    def parse(self, raw: dict[str, Any]) -> Any: ...
    def check(self, sweep: Sweep) -> Any: ...
    def trial(self, config: dict[str, Any], plan: dict[str, Any]) -> None: ...
    def absolute_paths(self, raw: dict[str, Any]) -> dict[str, Any]: ...
    def subject(self, job: Any) -> str: ...
    def write_outputs(self, rows: list[dict[str, Any]], sweep: Sweep) -> None: ...


SWEPT_KINDS = {"style_transfer": "dl_ray.style.sweep"}  # imported only when a sweep of that kind runs


def swept_kind(kind: str | None) -> SweptKind | ModuleType | None:
    """The adapter of a kind that brings its own trials, or None for a training job."""
    module = SWEPT_KINDS.get(kind or "")
    return importlib.import_module(module) if module else None


@dataclass(frozen=True)
class Distribution:
    """One swept field: ``{loguniform|uniform: [low, high]}``, ``{randint: [low, high]}`` (both
    inclusive), ``{choice: [...]}`` (sampled) or ``{grid: [...]}`` (every value, x num_samples)."""

    kind: str
    args: tuple

    def values_to_check(self) -> list[Any]:
        if self.kind in ("choice", "grid"):
            return list(self.args)
        low, high = self.args
        return [low, high] if self.kind == "randint" else [low, low + (high - low) * 0.999999]

    def sample(self, rng: random.Random) -> Any:
        low, high = self.args[0], self.args[-1]
        if self.kind == "loguniform":
            return low * (high / low) ** rng.random()
        if self.kind == "uniform":
            return rng.uniform(low, high)
        if self.kind == "randint":
            return rng.randint(low, high)
        return rng.choice(self.args)

    def to_ray(self, as_grid: bool = False):
        from ray import tune

        if self.kind == "grid" or (as_grid and self.kind == "choice"):
            return tune.grid_search(list(self.args))
        if self.kind == "choice":
            return tune.choice(list(self.args))
        if self.kind == "randint":
            return tune.randint(self.args[0], self.args[1] + 1)  # Ray's upper bound is exclusive
        return (tune.loguniform if self.kind == "loguniform" else tune.uniform)(*self.args)

    @property
    def log_scale(self) -> bool:
        return self.kind == "loguniform"


def parse_distribution(where: str, value: Any) -> Distribution:
    if not isinstance(value, dict) or len(value) != 1:
        raise SpecError(f"{where}: expected one distribution, e.g. {{loguniform: [1.0e-4, 1.0e-2]}}, "
                        f"got {value!r}; allowed: {', '.join(DISTRIBUTIONS)}")
    ((kind, args),) = value.items()
    if kind not in DISTRIBUTIONS:
        hint = difflib.get_close_matches(str(kind), DISTRIBUTIONS, n=1)
        maybe = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise SpecError(f"{where}: unknown distribution {kind!r}{maybe}; allowed: {', '.join(DISTRIBUTIONS)}")
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise SpecError(f"{where}.{kind}: expected a non-empty list of values, got {args!r}")
        return Distribution(kind, tuple(args))
    if not isinstance(args, list) or len(args) != 2:
        raise SpecError(f"{where}.{kind}: expected [low, high], got {args!r}")
    try:
        if kind == "randint":
            if not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
                raise ValueError
            low, high = args
        else:
            low, high = (float(a) for a in args)  # YAML reads 1e-3 as a string: accept it
    except (TypeError, ValueError):
        wanted = "integers" if kind == "randint" else "numbers"
        raise SpecError(f"{where}.{kind}: bounds must be {wanted}, got {args!r}") from None
    if not low < high:
        raise SpecError(f"{where}.{kind}: low must be < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise SpecError(f"{where}.loguniform: bounds must be > 0, got [{low}, {high}] (use uniform for ranges that include 0)")
    return Distribution(kind, (low, high))


class SchedulerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    name: Literal["fifo", "asha", "pbt"] = "fifo"
    """fifo: every trial runs its full budget; asha: stop bad trials early; pbt: population based training."""
    grace_period: int = Field(1, ge=1)
    """asha: epochs every trial runs before it may be stopped."""
    reduction_factor: float = Field(3.0, gt=1)
    """asha: only the best 1/reduction_factor of trials go on at each rung (epochs grace_period * rf^k)."""
    perturbation_interval: int = Field(2, ge=1)
    """pbt: epochs between two exploit/explore steps."""
    quantile_fraction: float = Field(0.25, gt=0, le=0.5)
    """pbt: the bottom fraction copies the weights and hyperparameters of the top fraction."""
    resample_probability: float = Field(0.25, ge=0, le=1)
    """pbt: chance that explore draws a swept value anew instead of perturbing it (x0.8 / x1.2)."""


class TuneSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    space: dict[str, Any] = Field(min_length=1)
    """Dotted job field -> distribution: loguniform, uniform, randint, choice, grid."""
    metric: str = "val/loss"
    """What the sweep optimises: a metric the trials report, e.g. val/loss, val/accuracy."""
    mode: Literal["min", "max"] | None = None
    """min or max; default: min for losses, max otherwise."""
    num_samples: int = Field(8, ge=1)
    """Trials to sample (with grid values: repetitions of the whole grid)."""
    search: Literal["random", "grid", "optuna"] = "random"
    """random (seeded), grid (every combination of grid/choice values), optuna (TPE; pip install optuna)."""
    scheduler: SchedulerSpec = SchedulerSpec()
    """fifo | asha | pbt, or a mapping {name: asha, grace_period: 2, ...}."""
    seed: int | None = None
    """Seed of the search; default: the job's training.seed."""
    max_concurrent_trials: int | None = Field(None, ge=1)
    """Trials running at once; default: cluster CPUs (GPUs) / what one trial holds; pbt: the whole population
    (each trial then holds min(cpus_per_worker, cluster CPUs / population); a lower value is refused)."""
    time_budget_s: float | None = Field(None, gt=0)
    """Stop the whole sweep after this many seconds (running trials are stopped)."""
    max_failures: int = Field(1, ge=0)
    """Retries of a failed trial (from its latest checkpoint) before it is reported as failed."""
    compare: bool = False
    """An experiment: also write comparison.csv (parameters, multiply-adds, errors per setting, seeds averaged) and
    comparison.png (error against epoch per setting), see dl_ray.experiments."""
    trial: Literal["train", "evaluate"] = "train"
    """train: each trial trains the job; evaluate: each trial evaluates one checkpoint with the sampled settings."""
    checkpoint: str | None = None
    """evaluate: a run under storage.path (e.g. dates_attention: its best checkpoint, else its latest), or a run or
    checkpoint folder's path (relative: from the working directory), or its s3:// / gs:// URI. A sweep sent to a
    bucket finds its runs there (dates_attention: storage.path's URI/dates_attention)."""
    evaluator: str = "eval_metrics"
    """evaluate: a registered evaluator (see dl_ray.tune.evaluators) or 'package.module:function'."""
    split: Literal["val", "test"] = "val"
    """evaluate: the split the evaluator scores."""

    @model_validator(mode="before")
    @classmethod
    def _scheduler_by_name(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and isinstance(raw.get("scheduler"), str):
            raw = {**raw, "scheduler": {"name": raw["scheduler"]}}
        return raw

    @property
    def direction(self) -> Literal["min", "max"]:
        return self.mode or ("min" if "loss" in self.metric or "error" in self.metric else "max")


@dataclass
class Sweep:
    name: str
    job: JobSpec
    """The base job every trial starts from (trials override the swept fields)."""
    job_raw: dict[str, Any]
    """The base job as written (paths as the user gave them: best.yaml keeps them)."""
    tune: TuneSpec
    space: dict[str, Distribution]
    checkpoint: Path | None = None
    """evaluate trials: the checkpoint folder."""
    checkpoint_bucket: str | None = None
    """evaluate trials: the URI of the run (or checkpoint) folder ``checkpoint`` is this node's copy of; each trial
    fetches it to the same path on its own node."""
    direction: str = "min"
    """min or max: the base job's early-stopping metric, as its task reports it (set by the sweep's check)."""

    @property
    def folder(self) -> Path:
        return Path(self.job.storage.path).absolute() / self.name

    @property
    def own_kind(self) -> SweptKind | ModuleType | None:
        """The job kind's own sweep code (style transfer), or None: trials train through the generic loop."""
        return swept_kind(self.job.kind)

    @property
    def reports_once(self) -> bool:
        """Trials report once, at their end: evaluate trials, and every kind with its own trials."""
        return self.tune.trial == "evaluate" or self.own_kind is not None

    def trial_spec(self, params: dict[str, Any]) -> dict[str, Any]:
        """The base job with one trial's sampled values (settings.* excluded)."""
        raw = copy.deepcopy(self.job_raw)
        raw["storage"] = {**raw.get("storage", {}), "path": str(Path(self.job.storage.path).absolute())}
        if self.own_kind is not None:
            self.own_kind.absolute_paths(raw)
        elif getattr(self.job.data, "path", None):  # trials run in their own folder: paths must be absolute
            raw["data"]["path"] = str(Path(self.job.data.path).absolute())
        for path, value in params.items():
            if not path.startswith(SETTINGS):
                set_path(raw, path, value)
        return raw


def load_sweep(path: str | Path, overrides: list[str] = ()) -> Sweep:
    path = Path(path)
    raw = read_mapping(path, "sweep file")
    kinds.require(raw, "tune", str(path))
    raw.pop("kind")  # the swept job's own kind comes from its base (or is supervised)
    raw.setdefault("name", path.stem)
    for item in overrides:
        key, _, value = item.partition("=")
        if key.strip().startswith("tune.space.") and isinstance(raw.get("tune"), dict):  # space keys are dotted paths
            raw["tune"].setdefault("space", {})[key.strip().removeprefix("tune.space.")] = yaml.safe_load(value)
        else:
            apply_override(raw, item)
    if not isinstance(raw.get("tune"), dict):
        raise SpecError(f"sweep file {path}: tune: missing section; it needs at least a space, e.g. "
                        "tune: {space: {optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}}}")
    try:
        tune = TuneSpec.model_validate(raw.pop("tune"))
    except ValidationError as e:
        raise SpecError(describe(e, TuneSpec, "tune.")) from None
    name = str(raw["name"])
    checkpoint = bucket = None
    if tune.trial == "evaluate":
        from dl_ray.cluster import mirror
        from dl_ray.tune.evaluators import resolve_checkpoint

        if not tune.checkpoint:
            raise SpecError("tune.checkpoint: evaluate trials need the checkpoint (or run folder) to evaluate")
        bucket = evaluated_bucket(tune.checkpoint)
        run = mirror.fetched(bucket, "tune.checkpoint") if bucket else evaluated_run(tune.checkpoint, raw, path)
        checkpoint = resolve_checkpoint(run)
        base = yaml.safe_load((checkpoint / "spec.yaml").read_text())
    else:
        base = _load_base(path, raw.pop("base")) if "base" in raw else {}
    raw.pop("base", None)
    job_raw = merge_job(base, raw)
    job_raw["name"] = name
    job = parse_job(job_raw)
    space = {key: parse_distribution(f"tune.space.{key}", value) for key, value in tune.space.items()}
    sweep = Sweep(name, job, job_raw, tune, space, checkpoint, bucket)
    check_space(sweep)
    return sweep


def evaluated_bucket(given: str) -> str | None:
    """``tune.checkpoint`` kept in a bucket: its URI as given, or a run in the sweep's own bucket (a sweep sent to
    one is told it in $DL_RAY_STORAGE_URI; its storage.path is then a scratch folder); None for a folder here."""
    from dl_ray.cluster.mirror import STORAGE_ENV

    if "://" in given:
        scheme = given.partition("://")[0]
        if scheme not in STORAGE_SCHEMES:
            raise SpecError(f"tune.checkpoint: {given}: unknown scheme {scheme!r}; allowed: a folder path, "
                            f"{' or '.join(f'{s}://bucket/prefix' for s in STORAGE_SCHEMES)}")
        return given.rstrip("/")
    root = os.environ.get(STORAGE_ENV)
    return f"{root.rstrip('/')}/{given}" if root and not Path(given).is_absolute() else None


def evaluated_run(given: str, raw: dict[str, Any], sweep_file: Path) -> Path:
    """``tune.checkpoint``: a folder path, or a run under ``storage.path`` (``dates_attention``: runs/dates_attention)."""
    path = Path(given)
    if path.is_absolute():
        return path
    storage = Path((raw.get("storage") or {}).get("path") or StorageSpec().path)
    for candidate in (storage / path, path):
        if candidate.exists():
            return candidate.absolute()
    job = next((f for f in (sweep_file.parent / f"{path.name}.yaml", sweep_file.parent.parent / f"{path.name}.yaml")
                if f.is_file() and read_mapping(f).get("kind") != "sweep"), None)  # the job that trains it
    train = f": train {_shown(job)} first (dl-ray train {_shown(job)})" if job else ": train it first"
    raise SpecError(f"tune.checkpoint: no trained run {given} in storage.path {_shown(storage)} "
                    f"(nor in the working directory){train}")


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when it is inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(Path.cwd())) if resolved.is_relative_to(Path.cwd()) else str(path)


def check_space(sweep: Sweep) -> None:
    """Every swept path exists, every value it can take is valid, and so are sampled combinations."""
    tune, settings_model = sweep.tune, None
    if tune.trial == "evaluate":
        from dl_ray.tune.evaluators import get_evaluator

        settings_model = get_evaluator(tune.evaluator).config
    for key, dist in sweep.space.items():
        if key.startswith(SETTINGS) and settings_model is not None:
            for value in dist.values_to_check():
                _check_settings(settings_model, {key.removeprefix(SETTINGS): value})
            continue
        sweepable = sweep.own_kind.SWEEPABLE if sweep.own_kind is not None else SWEEPABLE
        if key.split(".")[0] not in sweepable:
            extra = f" or {SETTINGS}<evaluator setting>" if settings_model is not None else ""
            raise SpecError(f"tune.space.{key}: cannot be swept; sweepable sections: {', '.join(sweepable)}{extra}")
        for value in dist.values_to_check():
            raw = copy.deepcopy(sweep.job_raw)
            try:
                set_path(raw, key, value)
                parse_job(raw)
            except SpecError as e:
                text = str(e)
                raise SpecError(f"tune.space.{text}" if text.startswith(key) else f"tune.space.{key}={value!r}: {text}") from None
    if tune.search == "grid" and (bad := [k for k, d in sweep.space.items() if d.kind not in ("grid", "choice")]):
        raise SpecError(f"tune.search: grid needs grid or choice values; tune.space.{bad[0]} is {sweep.space[bad[0]].kind}")
    if tune.search == "optuna" and (bad := [k for k, d in sweep.space.items() if d.kind == "grid"]):
        raise SpecError(f"tune.search: optuna samples, it cannot take grid values (tune.space.{bad[0]}); use choice")
    rng = random.Random(0)
    for _ in range(64):  # fields that are valid alone may clash together (step decay needs decay_rate < 1)
        params = {key: dist.sample(rng) for key, dist in sweep.space.items()}
        try:
            parse_job(sweep.trial_spec(params))
        except SpecError as e:
            shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
            raise SpecError(f"tune.space: the sampled combination {shown} is not a valid job: {e}") from None


def parse_job(raw: dict[str, Any]) -> JobSpec:
    """The swept job: a training job, or one of a kind with its own trials (style transfer: no model or data)."""
    own = swept_kind(raw.get("kind"))
    return own.parse(raw) if own is not None else parse_spec(raw)


def _check_settings(model: type[BaseModel], values: dict[str, Any]) -> None:
    try:
        model.model_validate(values)
    except ValidationError as e:
        raise SpecError(describe(e, model, "tune.space.settings.")) from None


def _load_base(sweep_file: Path, base: Any) -> dict[str, Any]:
    if not isinstance(base, str):
        raise SpecError(f"base: expected the path of a job file, got {base!r}")
    path = _relative_to(sweep_file, base)
    if not path.is_file():
        raise SpecError(f"base: no such job file: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise SpecError(f"base: {path} is not a job file (expected a mapping of sections)")
    return raw


def _relative_to(file: Path, target: str | Path) -> Path:
    target = Path(target)
    return target if target.is_absolute() else (file.parent / target).resolve()


def merge_job(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """A sweep file's sections over its base job's: sections merge key by key, except a model or dataset of another
    name, which replaces the base's whole section (its fields belong to the other one)."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in ("model", "data"):
            out[key] = merge_job(out[key], value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            same = value.get("name", out[key].get("name")) == out[key].get("name")
            out[key] = merge_job(out[key], value) if same else copy.deepcopy(value)  # another model: its own fields
        else:
            out[key] = copy.deepcopy(value)
    return out
