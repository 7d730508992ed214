"""Analysis jobs: the kinds that train nothing, run by ``dl-ray analyze JOB``.

Some lessons are measurements rather than training runs (how the gradient reaching the first step of an RNN
shrinks with the sequence length) or operations on what a run produced (removing a bias direction from word
vectors). They are still job files with a typed ``kind``, a run folder and ``--set`` overrides::

    kind: debias
    name: debias_wiki
    analysis: {vectors: runs/word2vec_sgns, ...}   # the kind's config (pydantic, a docstring per field)

A kind registers its function with ``@register_analysis("debias", DebiasConfig)``; the function takes the
validated config and the run folder, writes its pictures there and returns its headline figures, which the
command prints and saves as ``summary.json``. Bad input is a SpecError raised before anything is written.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml
from pydantic import BaseModel, Field, SerializeAsAny, ValidationError

from dl_ray import kinds
from dl_ray.errors import SpecError
from dl_ray.spec import RunFolder, Section, StorageSpec, describe, read_job, refuse_other_spec, writable

Figures = dict[str, "float | int | str"]


@dataclass(frozen=True)
class Analysis:
    kind: str
    config: type[BaseModel]
    run: Callable[[Any, Path], Figures]
    doc: str


ANALYSES: dict[str, Analysis] = {}


def register_analysis(kind: str, config: type[BaseModel]):
    """``@register_analysis("gradient_flow", GradientFlowConfig)`` on ``fn(cfg, run_dir) -> figures``."""

    def add(fn: Callable[[Any, Path], Figures]) -> Callable[[Any, Path], Figures]:
        if kinds.COMMANDS.get(kind) != "analyze":
            raise ValueError(f"analysis kind {kind!r} is not an `analyze` kind in dl_ray/kinds.py")
        if kind in ANALYSES:
            raise ValueError(f"analysis {kind!r} is already registered")
        ANALYSES[kind] = Analysis(kind, config, fn, (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return add


class AnalysisSpec(RunFolder, Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Job name (letters, digits, '_', '-', '.'); the run folder is storage.path/name."""
    kind: str
    """Which analysis (dl-ray list shows them): gradient_flow | debias."""
    description: str = ""
    analysis: SerializeAsAny[BaseModel]
    """The fields of the kind's config."""
    storage: StorageSpec = StorageSpec()


def parse_analysis(raw: dict[str, Any]) -> AnalysisSpec:
    """The job file of an analysis kind, validated by that kind's config; every problem is one SpecError line."""
    raw = dict(raw)
    kind = kinds.require(raw, "analyze")
    if kind not in ANALYSES:
        raise SpecError(f"kind: {kind} has no analysis registered; allowed: {', '.join(sorted(ANALYSES)) or 'none'}")
    section = raw.get("analysis", {})
    if not isinstance(section, dict):
        raise SpecError(f"analysis: expected a mapping of {kind} fields, got {section!r}")
    config = ANALYSES[kind].config
    try:
        raw["analysis"] = config.model_validate(section)
        return AnalysisSpec.model_validate(raw)
    except ValidationError as e:
        root, prefix = (config, "analysis.") if not isinstance(raw["analysis"], BaseModel) else (AnalysisSpec, "")
        raise SpecError(describe(e, root, prefix)) from None


def run_analysis(path: str | Path, overrides: list[str] = ()) -> tuple[AnalysisSpec, Figures]:
    """Validate, then run the analysis into its run folder; a folder made here is removed if the run fails."""
    spec = writable(parse_analysis(read_job(path, overrides)))
    run_dir = spec.run_dir
    refuse_other_spec(run_dir, spec.to_dict(), (), parse_analysis)
    made = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        figures = ANALYSES[spec.kind].run(spec.analysis, run_dir)
    except BaseException:
        if made:  # nothing half-written is left behind for bad input found late, or an interrupt
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    (run_dir / "spec.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    (run_dir / "summary.json").write_text(json.dumps(figures, indent=2, default=float))
    return spec, figures


def command(path: str, overrides: list[str], console) -> int:
    """``dl-ray analyze``: run it, print its figures as a table and where its files are."""
    from rich.table import Table

    spec, figures = run_analysis(path, overrides)
    table = Table(title=f"{spec.kind}: {spec.name}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in figures.items():
        table.add_row(name, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
    files = sorted(p.name for p in spec.run_dir.iterdir() if p.is_file())
    console.print(f"run folder: {spec.run_dir} ({', '.join(files)})")
    return 0


# the analysis kinds (each module registers itself on import)
from dl_ray import rnn_gradients  # noqa: E402,F401  (gradient_flow)
from dl_ray import debias  # noqa: E402,F401  (debias)
