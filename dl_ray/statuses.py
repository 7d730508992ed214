"""One vocabulary of run statuses for every kind (train, tune trials, dqn, q_learning).

A run's ``summary.json`` carries ``status`` (one of ``STATUSES``) and, when the run did not reach the end it planned,
``stop_reason``: a short phrase a person reads, e.g. ``early stopping``, ``interrupted``, ``jobs stop`` or
``max_time_s (60 s) at 1.3 % of 2,000,000 env steps``. Build summaries with :func:`status_fields` so the two keys are
always written the same way.
"""
from __future__ import annotations

RUNNING = "running"
COMPLETED = "completed"
STOPPED = "stopped"
FAILED = "failed"
STATUSES = (RUNNING, COMPLETED, STOPPED, FAILED)

# The stop reasons the code writes itself; others (a time budget with its figures) are built where they happen.
EARLY_STOPPING = "early stopping"
INTERRUPTED = "interrupted"
JOBS_STOP = "jobs stop"
NONFINITE_LOSS = "non-finite loss"  # with FAILED: the loss became NaN or inf


def status_fields(status: str, stop_reason: str | None = None) -> dict:
    """The ``status`` (and ``stop_reason`` when there is one) keys of a summary.

    A stopped run must say why; a completed or running one has no stop reason.
    """
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    if status == STOPPED and not stop_reason:
        raise ValueError("a stopped run needs a stop_reason")
    if status in (RUNNING, COMPLETED) and stop_reason:
        raise ValueError(f"a {status} run has no stop_reason (got {stop_reason!r})")
    return {"status": status, "stop_reason": stop_reason} if stop_reason else {"status": status}


def describe(summary: dict) -> str:
    """``stopped (early stopping)`` / ``completed``: the status of a summary as one short phrase for tables."""
    status = summary.get("status", "?")
    reason = summary.get("stop_reason")
    return f"{status} ({reason})" if reason else status
