"""Evaluate-only trials: "score this checkpoint with these settings", no training.

A sweep with ``tune.trial: evaluate`` runs one evaluator per trial and reports what it returns::

    class DecodeSettings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        beam_width: int = Field(1, ge=1)
        length_alpha: float = Field(0.0, ge=0)

    @register_evaluator("beam_search", DecodeSettings)
    def beam_search(request: EvalRequest) -> dict[str, float]:
        model, data = request.load()           # the checkpoint's weights in the (overridden) job's model
        ...                                    # decode request.split with request.settings.beam_width
        return {f"{request.split}/bleu": bleu}

Space keys ``settings.<field>`` go to the evaluator's settings (checked against its model
before anything starts); any other key overrides the checkpoint's job, as in train sweeps.
The default evaluator, ``eval_metrics``, averages ``model.eval_metrics`` over the split: enough
when the swept settings are model fields that the family's ``eval_metrics`` reads.

Ray-free on purpose: model families may register evaluators next to their model.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from pydantic import BaseModel, ConfigDict

from dl_ray.registry import Registry
from dl_ray.spec import JobSpec, SpecError

EVALUATORS: Registry[Callable[["EvalRequest"], dict[str, float]]] = Registry("evaluator")
register_evaluator = EVALUATORS.register


class NoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class EvalRequest:
    checkpoint: Path
    """The checkpoint folder (``state.pt``, ``spec.yaml``)."""
    spec: JobSpec
    """The checkpoint's job with this trial's sampled job fields."""
    settings: BaseModel
    """This trial's ``settings.*`` values, validated by the evaluator's settings model."""
    split: str
    """``val`` or ``test``."""
    device: torch.device

    def load(self) -> tuple[Any, Any]:
        """(model in eval mode on ``device`` with the checkpoint's weights, the job's DataBundle)."""
        from dl_ray.data import build_data
        from dl_ray.runs import load_model

        model, _ = load_model(self.checkpoint, spec=self.spec, device=self.device)
        return model, build_data(self.spec.data)


@register_evaluator("eval_metrics", NoSettings)
def eval_metrics(request: EvalRequest) -> dict[str, float]:
    """The model's own eval metrics (loss, accuracy, what its family decodes) over the split."""
    from dl_ray.train.loop import evaluate

    model, data = request.load()
    return evaluate(model, data, request.split, 0, 1, request.device)


def get_evaluator(name: str):
    """A registered evaluator; ``package.module:name`` first imports the module that registers it."""
    import dl_ray.models  # noqa: F401  (families register their evaluators on import)

    module, _, short = name.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise SpecError(f"tune.evaluator: cannot import {module!r}: {e}") from None
    if short not in EVALUATORS:
        raise SpecError(f"tune.evaluator: unknown evaluator {short!r}; registered: {', '.join(EVALUATORS.names())} "
                        "(or 'package.module:name' for one registered in another module)")
    return EVALUATORS[short]


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint folder as given, or a run folder's best checkpoint (else its latest)."""
    from dl_ray.runs import checkpoint_of

    try:
        return checkpoint_of(path)
    except SpecError as e:
        raise SpecError(f"tune.checkpoint: {e}") from None
