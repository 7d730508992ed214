"""SIGTERM and SIGINT handled for the length of a block, then handed back.

The wrappers around a job's command (``joblog``, ``mirror``) must outlive the signals Ray sends the command.
Their ``main`` also runs inside other processes (the tests call it in-process); a handler left behind there
would be inherited by every process forked later, which then ignores SIGTERM and hangs whoever waits on it.
"""
from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def handled(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` takes SIGTERM and SIGINT inside the block; the previous handlers come back after it."""
    before = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, previous in before.items():
            signal.signal(sig, previous)
