"""``dl-ray list``: one line per registered model, dataset and analysis; ``dl-ray list NAME``: its config fields."""
from __future__ import annotations

import textwrap
from typing import Any

from dl_ray.errors import SpecError


def catalogue() -> dict[str, list[tuple[str, Any]]]:
    """Section title -> (name, entry) of every registered model (by job kind), dataset and analysis."""
    from dl_ray.analysis import ANALYSES
    from dl_ray.api import registered
    from dl_ray.kinds import COMMANDS
    from dl_ray.registry import DATASETS, MODELS

    names = registered()
    datasets = names.pop("datasets")
    sections = {f"models of kind {kind} (dl-ray {COMMANDS.get(kind, 'train')})": [(n, MODELS[n]) for n in models]
                for kind, models in names.items()}
    sections["datasets (data.name)"] = [(n, DATASETS[n]) for n in datasets]
    sections["analyses (dl-ray analyze; kind)"] = sorted(ANALYSES.items())
    return sections


def overview(width: int = 80) -> list[str]:
    """One line per name: the name and its one-line description, cut (with …) to ``width``."""
    sections = catalogue()
    pad = max(len(name) for entries in sections.values() for name, _ in entries)
    lines = []
    for title, entries in sections.items():
        lines += ["", title] if lines else [title]
        lines += [_cut(f"  {name:<{pad}}  {entry.doc}", width) for name, entry in entries]
    return lines + ["", "dl-ray list NAME: the config fields of one (name, type, default, what it does)"]


def details(name: str, width: int = 80) -> list[str]:
    """The config fields of every entry called ``name``: ``field: type = default``, the doc wrapped below it."""
    from dl_ray.spec import describe_fields

    found = [(title, entry) for title, entries in catalogue().items() for n, entry in entries if n == name]
    if not found:
        known = sorted({n for entries in catalogue().values() for n, _ in entries})
        raise SpecError(f"list: unknown name {name!r}; allowed: {', '.join(known)}")
    lines = []
    for title, entry in found:
        what = title.split(" (")[0].removesuffix("s").replace("models of kind", "model of kind")
        lines += ["" if lines else None, *textwrap.wrap(f"{name} ({what}): {entry.doc}", width, subsequent_indent="  ")]
        for field, kind, doc in describe_fields(entry.config):
            lines.append(f"  {field}: {kind}")
            lines += textwrap.wrap(doc, width, initial_indent="      ", subsequent_indent="      ")
    return [line for line in lines if line is not None]


def _cut(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 1].rstrip() + "…"
