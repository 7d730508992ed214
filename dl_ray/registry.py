"""Name -> builder registries for models and datasets (timm style).

A family registers its builders with ``@register_model("name", Config)``; the
config is a pydantic model whose fields (with their docstrings) are what a job
file may set under ``model:``; ``kind=`` names the job kind it belongs to
(supervised by default; dqn for Q-networks; autoencoder, vae, gan...), so a
job of another kind naming it is one clear error. Duplicate names are refused
so two files can never silently shadow each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    build: Callable[..., T]
    config: type[BaseModel]
    doc: str
    kind: str = ""
    accepts: Callable[[Any], str | None] | None = None
    """The data a model family takes: ``accepts(io)`` is None, or why it cannot learn from that data."""


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, config: type[BaseModel], kind: str = "",
                 accepts: Callable[[Any], str | None] | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def add(build: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            doc = (build.__doc__ or "").strip().splitlines()
            self._entries[name] = Entry(name, build, config, doc[0] if doc else "", kind, accepts)
            return build

        return add

    def __getitem__(self, name: str) -> Entry[T]:
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self, kind: str | None = None) -> list[str]:
        """Every registered name, or those of one kind."""
        return sorted(n for n, e in self._entries.items() if kind is None or e.kind == kind)


MODELS: Registry[Any] = Registry("model")
DATASETS: Registry[Any] = Registry("dataset")
register_dataset = DATASETS.register


def register_model(name: str, config: type[BaseModel], kind: str = "supervised",
                   accepts: Callable[[Any], str | None] | None = None):
    """``@register_model("lenet5", LeNetConfig, accepts=LeNet5.accepts)``: a model builder of a job kind
    (supervised by default). ``accepts(io)`` declares the data it takes: None, or the reason it refuses
    (the builder raises ValueError with that reason; tests/test_models.py holds every family to it)."""
    return MODELS.register(name, config, kind, accepts)
