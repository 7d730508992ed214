"""The job spec: one YAML file, validated into typed sections.

``load_spec(path, overrides)`` is the only way in. Every problem with a file,
a key, a type or an override becomes one :class:`SpecError` line that names
the dotted path and, where it is a choice, the allowed values.
"""
from __future__ import annotations

import copy
import difflib
import sys
from pathlib import Path
from typing import Any, Callable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from dl_ray import kinds
from dl_ray.data import DataConfig
from dl_ray.errors import RunError, SpecError  # noqa: F401  (re-exported: dl_ray.spec.SpecError)
from dl_ray.models import ModelConfig
from dl_ray.registry import DATASETS, MODELS, Registry


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class OptimizerSpec(Section):
    name: Literal["sgd", "rmsprop", "adam"] = "adam"
    """sgd (batch / minibatch / online GD by training.batch_size), rmsprop, or adam."""
    lr: float = Field(1e-3, gt=0)
    """Initial learning rate."""
    momentum: float = Field(0.0, ge=0, lt=1)
    """sgd and rmsprop: weight of the exponentially averaged past gradients (0 = plain GD)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """adam: decay of the first and second moment averages (bias-corrected)."""
    rho: float = Field(0.99, gt=0, lt=1)
    """rmsprop: decay of the squared-gradient average."""


class ScheduleSpec(Section):
    name: Literal["constant", "step", "exponential", "inverse_time", "cosine"] = "constant"
    """LR decay per epoch: step (x decay_rate every step_size), exponential (x decay_rate^epoch),
    inverse_time (/(1 + decay_rate*epoch)), cosine (to min_lr at the last epoch)."""
    decay_rate: float = Field(0.5, gt=0)
    """Rate of step / exponential (must be < 1) and inverse_time decay."""
    step_size: int = Field(10, ge=1)
    """step: epochs between two decays."""
    min_lr: float = Field(0.0, ge=0)
    """cosine: learning rate reached at the last epoch."""

    @model_validator(mode="after")
    def _rate_below_one(self):
        if self.name in ("step", "exponential") and self.decay_rate >= 1:
            raise ValueError(f"decay_rate must be < 1 for {self.name} decay (got {self.decay_rate})")
        return self


class EarlyStoppingSpec(Section):
    patience: int | None = Field(None, ge=1)
    """Stop after this many epochs without improvement of ``metric``; null = off."""
    metric: str = "val/loss"
    """Validation metric watched (any val/<name> the task reports: val/loss, val/accuracy, val/elbo, ...);
    the best checkpoint by it is always kept. Whether lower or higher is better is the task's to say."""
    min_delta: float = Field(0.0, ge=0)
    """Smallest change that counts as an improvement."""


class AugmentSpec(Section):
    max_shift: int = Field(0, ge=0, le=8)
    """Random translation of training images, in pixels (0 = off)."""
    max_rotation: float = Field(0.0, ge=0, le=45)
    """Random rotation of training images, in degrees (0 = off)."""

    @property
    def enabled(self) -> bool:
        return self.max_shift > 0 or self.max_rotation > 0


class RegularizationSpec(Section):
    l2: float = Field(0.0, ge=0)
    """L2 penalty lambda: adds lambda/2 * ||w||^2 over weights (not biases) to the loss."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Drop probability of the models' dropout layers."""
    early_stopping: EarlyStoppingSpec = EarlyStoppingSpec()
    augment: AugmentSpec = AugmentSpec()
    """Random shifts and rotations of training images; null (or 0 and 0) switches them off."""

    @field_validator("augment", mode="before")
    @classmethod
    def _null_is_off(cls, value: Any) -> Any:
        return {} if value is None else value  # --set regularization.augment=null: a job's augmentation, off


class TrainingSpec(Section):
    epochs: int = Field(10, ge=1)
    """Passes over the training set."""
    batch_size: int | Literal["full"] = 64
    """Global batch (split over workers); 1 = online GD, 'full' = batch GD (one step per epoch)."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16 = autocast the forward pass to bfloat16 (fastest on GPUs with bf16 tensor cores; runs on CPUs too)."""
    memory_format: Literal["contiguous", "channels_last"] = "contiguous"
    """channels_last = convolution weights and image batches stored NHWC, the layout GPU tensor cores
    (and oneDNN on CPUs) convolve fastest; other tensors are unchanged."""
    grad_clip: float | None = Field(None, gt=0)
    """Clip gradients at this value (how: grad_clip_mode); null = no clipping."""
    grad_clip_mode: Literal["norm", "value"] = "norm"
    """norm: rescale all gradients together so their global L2 norm is at most grad_clip (keeps the direction);
    value: clamp every gradient entry to [-grad_clip, grad_clip] (bounds each step, may turn it)."""
    seed: int = 0
    """Seeds model initialisation, shuffling, dropout and augmentation."""
    checkpoint_every: int = Field(1, ge=1)
    """Save a checkpoint every N epochs (and at the last and every best epoch)."""
    keep_checkpoints: int = Field(1, ge=1)
    """Checkpoints kept besides the latest (always kept, to resume): the best N by the early-stopping metric
    (with patience set), else the N latest. 1: the best and the latest, one folder when they are the same."""
    max_failures: int = Field(0, ge=-1)
    """Worker-group restarts from the latest checkpoint before the run fails (-1 = unlimited)."""

    @model_validator(mode="after")
    def _batch_size_positive(self):
        if isinstance(self.batch_size, int) and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or 'full' (got {self.batch_size})")
        return self


class ScalingSpec(Section):
    num_workers: int = Field(0, ge=0)
    """Ray Train workers; 0 = Ray Train local mode (in this process, fastest start)."""
    use_gpu: bool = False
    """One GPU per worker; the only change needed to go from CPU to GPUs."""
    cpus_per_worker: float = Field(1.0, gt=0)
    """CPUs reserved for each worker."""
    resources_per_worker: dict[str, float] = Field(default_factory=dict)
    """Extra custom resources per worker, e.g. {accelerator_type:H100: 0.01}."""


class TrackingSpec(Section):
    wandb: Literal["offline", "online", "disabled"] = "offline"
    """W&B mode: offline needs no key or network (sync later with `wandb sync`)."""
    project: str = "dl-ray"
    """W&B project."""
    group: str | None = None
    """W&B group (a sweep sets it to the sweep name)."""
    run_name: str | None = None
    """W&B run name; default: storage.name."""


class StorageSpec(Section):
    path: str = "runs"
    """Folder holding every run (absolute, or relative to the working directory). For runs on several
    nodes: a shared filesystem path (NFS; set shared: true) or an s3:// / gs:// bucket URI."""
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    """This run's folder; default: the job's name. The same name again resumes."""
    shared: bool = False
    """True when path is one filesystem mounted at the same place on every node (NFS, EFS, Filestore,
    a ReadWriteMany volume); a multi-node run refuses node-local storage."""

    @field_validator("path")
    @classmethod
    def _known_uri(cls, path: str) -> str:
        scheme, sep, rest = path.partition("://")
        if sep and (scheme not in STORAGE_SCHEMES or not rest.strip("/")):
            raise ValueError("expected a filesystem path or a bucket URI: s3://bucket/prefix or gs://bucket/prefix")
        return path

    @property
    def is_uri(self) -> bool:
        return "://" in self.path

    @property
    def node_local(self) -> bool:
        """Only the node that writes it can read it back (a plain local path)."""
        return not (self.is_uri or self.shared)


STORAGE_SCHEMES = ("s3", "gs")


class ClusterSpec(Section):
    address: str | None = None
    """Ray dashboard / Jobs address `dl-ray submit` and `dl-ray jobs` use when neither --address nor
    RAY_ADDRESS is given, e.g. http://127.0.0.1:8265 (a tunnel: `ray dashboard`, `kubectl port-forward`)."""


class RunFolder:
    """What every job kind (train, sweep, RL) shares: its ``name`` and ``storage`` fields make a run folder."""

    @property
    def run_name(self) -> str:
        return self.storage.name or self.name

    @property
    def run_dir(self) -> Path:
        return (Path(self.storage.path) / self.run_name).absolute()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class JobSpec(RunFolder, Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Job name (letters, digits, '_', '-', '.')."""
    kind: kinds.TrainKind = "supervised"
    """What is trained (dl-ray train): supervised | autoencoder | vae | gan | detection | language_model |
    embedding | metric_learning; the model must be of this kind."""
    description: str = ""
    model: SerializeAsAny[ModelConfig]
    data: SerializeAsAny[DataConfig]
    optimizer: OptimizerSpec = OptimizerSpec()
    """The optimizer of a model that has one."""
    optimizers: dict[str, OptimizerSpec] | None = None
    """Named optimizers of a model that has several, e.g. a GAN's {generator: {...}, discriminator: {...}}."""
    schedule: ScheduleSpec = ScheduleSpec()
    regularization: RegularizationSpec = RegularizationSpec()
    training: TrainingSpec = TrainingSpec()
    scaling: ScalingSpec = ScalingSpec()
    tracking: TrackingSpec = TrackingSpec()
    storage: StorageSpec = StorageSpec()
    cluster: ClusterSpec = ClusterSpec()



# ---------------------------------------------------------------- loading


def read_mapping(path: str | Path, what: str = "job file") -> dict[str, Any]:
    """A YAML file that must hold a mapping of sections; every problem is one SpecError line."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{what}: no such file: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise SpecError(f"{what} {path}: not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{what} {path}: not a text file") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise SpecError(f"{what} {path}: expected a mapping of sections, got {type(raw).__name__}")
    return raw


def read_job(path: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    """A job file as a dict, named after the file unless it says otherwise, with ``--set`` overrides applied."""
    raw = read_mapping(path)
    raw.setdefault("name", Path(path).stem)
    before = copy.deepcopy(raw)
    for item in overrides:
        apply_override(raw, item)
    for note in drop_fields_of_replaced(before, raw, [item.partition("=")[0].strip() for item in overrides]):
        print(note, file=sys.stderr)
    return raw


def drop_fields_of_replaced(before: dict, raw: dict, overridden: list[str]) -> list[str]:
    """``--set model.name=mlp`` on a LeNet job: the file's fields mlp does not have (pooling) go, one notice line each
    section; fields given with ``--set`` stay (a wrong one is then the usual unknown-key error)."""
    notes = []
    kind = raw.get("kind", "supervised")
    for section, registry, allowed in (("model", MODELS, MODELS.names(kind)), ("data", DATASETS, DATASETS.names())):
        old, new = before.get(section), raw.get(section)
        if not (isinstance(old, dict) and isinstance(new, dict)) or old.get("name") == new.get("name"):
            continue
        if new.get("name") not in allowed:
            continue  # an unknown name, or one of another job kind, is the error parse_spec reports
        fields = registry[new["name"]].config.model_fields
        gone = [k for k in new if k not in fields and f"{section}.{k}" not in overridden]
        for key in gone:
            del new[key]
        if gone:
            notes.append(f"note: {section}.name {old.get('name')} -> {new['name']}: dropped {section}."
                         f"{f', {section}.'.join(gone)} ({new['name']} has no such field)")
    return notes


def load_spec(path: str | Path, overrides: list[str] = ()) -> JobSpec:
    return writable(parse_spec(read_job(path, overrides)))


def writable(spec: JobSpec) -> JobSpec:
    """The spec, if this process can write its run folder (a bucket URI is for jobs sent with `dl-ray submit`)."""
    if spec.storage.is_uri:
        raise SpecError(f"storage.path: {spec.storage.path} is a bucket, and a run writes to a folder: send the job with "
                        "`dl-ray submit` (it mirrors the run folder to the bucket) or give a filesystem path")
    return spec


def apply_override(raw: dict, item: str) -> None:
    """Apply one ``a.b.c=value`` to the raw dict; the value is read as YAML (1e-3, true, [1, 2])."""
    key, sep, text = item.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise SpecError(f"--set {item!r}: expected dotted.path=value, e.g. --set training.epochs=5")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    set_path(raw, key.strip(), value, label=f"--set {key.strip()}")


def set_path(raw: dict, path: str, value: Any, label: str | None = None) -> None:
    """``raw[a][b][c] = value`` for ``path`` 'a.b.c', creating sections on the way."""
    parts, node = path.split("."), raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(f"{label or path}: {'.'.join(parts[: i + 1])} is a value, not a section")
        node = child
    node[parts[-1]] = value


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}``."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out |= flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def refuse_other_spec(run_dir: Path, spec: dict[str, Any], resumable: tuple[str, ...],
                      parse: Callable[[dict], Section] | None = None) -> None:
    """A run folder holding a run with another spec is refused: rerunning resumes, it never overwrites.

    ``parse`` (the kind's spec parser) reads the saved spec with today's defaults, so a field added to dl_ray
    since the run started does not count as a change while it keeps its default."""
    saved = run_dir / "spec.yaml"
    if not saved.is_file():
        return
    before, now = flatten(_with_defaults(yaml.safe_load(saved.read_text()) or {}, parse)), flatten(spec)
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k) and not k.startswith(resumable))
    if changed:
        raise SpecError(f"storage.name: {run_dir} holds a run with a different spec ({', '.join(changed[:4])}); "
                        f"rerun it unchanged to resume, or pick a new --set storage.name=...")


def _with_defaults(saved: dict, parse: Callable[[dict], Section] | None) -> dict:
    if parse is None:
        return saved
    try:
        return parse(copy.deepcopy(saved)).to_dict()
    except SpecError:  # a field since removed or renamed: compare what was saved, which then differs
        return saved


def parse_spec(raw: dict) -> JobSpec:
    raw = dict(raw)
    kind = kinds.require(raw, "train")
    raw["model"] = parse_named(raw.get("model"), "model", MODELS, kind)
    raw["data"] = parse_named(raw.get("data"), "data", DATASETS)
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(describe(e, JobSpec, "")) from None


def parse_named(section: Any, field: str, registry: Registry, kind: str | None = None) -> BaseModel:
    """A ``{name: ..., fields...}`` section validated by the config its registry entry names.

    With ``kind``, only the entries of that job kind are allowed (a Q-network is no supervised model)."""
    allowed = registry.names(kind)
    if section is None:
        raise SpecError(f"{field}: missing section; it needs at least a name ({', '.join(allowed)})")
    if not isinstance(section, dict):
        raise SpecError(f"{field}: expected a mapping with a name, got {section!r}")
    name = section.get("name")
    if isinstance(name, str) and name in registry and name not in allowed:
        raise SpecError(f"{field}.name: {name} is a {registry[name].kind} {registry.kind}, and this is a {kind} job; "
                        f"allowed: {', '.join(allowed)} (or set kind: {registry[name].kind})")
    if not isinstance(name, str) or name not in registry:
        hint = difflib.get_close_matches(str(name), allowed, n=1)
        maybe = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise SpecError(f"{field}.name: unknown {registry.kind} {name!r}{maybe}; allowed: {', '.join(allowed)}")
    config = registry[name].config
    try:
        return config.model_validate(section)
    except ValidationError as e:
        raise SpecError(describe(e, config, f"{field}.")) from None


def describe(error: ValidationError, root: type[BaseModel], prefix: str) -> str:
    """One line naming each bad path, the problem, the value given and the allowed keys."""
    lines = []
    for err in error.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        where = prefix + ".".join(loc) if loc else prefix.rstrip(".") or "job"
        if err["type"] == "extra_forbidden":
            owner = _section_at(root, loc[:-1])
            allowed = ", ".join(owner.model_fields) if owner else "?"
            hint = difflib.get_close_matches(loc[-1], owner.model_fields, n=1) if owner else []
            maybe = f" (did you mean {hint[0]!r}?)" if hint else ""
            lines.append(f"{where}: unknown key{maybe}; allowed: {allowed}")
        elif err["type"] == "missing":
            lines.append(f"{where}: required field is missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            given = err.get("input")
            lines.append(f"{where}: {msg}" + ("" if isinstance(given, dict) else f" (got {given!r})"))
    return "; ".join(lines)


def _section_at(root: type[BaseModel], loc: list[str]) -> type[BaseModel] | None:
    node: Any = root
    for part in loc:
        field = node.model_fields.get(part) if isinstance(node, type) and issubclass(node, BaseModel) else None
        if field is None:
            return None
        node = field.annotation
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


def describe_fields(config: type[BaseModel]) -> list[tuple[str, str, str]]:
    """(field, type and default, docstring) rows for ``dl-ray list``."""
    rows = []
    for name, field in config.model_fields.items():
        if name == "name":
            continue
        default = field.get_default(call_default_factory=True)
        ann = field.annotation
        kind = ann.__name__ if isinstance(ann, type) else str(ann).replace("typing.", "")
        rows.append((name, f"{kind} = {default!r}", field.description or ""))
    return rows
