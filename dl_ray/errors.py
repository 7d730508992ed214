"""The two errors every command turns into one line: bad input (exit 2) and a run that failed (exit 1)."""
from __future__ import annotations


class SpecError(ValueError):
    """A bad job file, override, path or environment variable. The CLI prints it on one line and exits with code 2."""


class RunError(RuntimeError):
    """A run that started but could not finish. The CLI prints it on one line and exits with code 1."""
