"""``actors.num_actors: 0``: the DQN driver's loop in one process, without Ray.

The driver (:mod:`dl_ray.rl.driver`) reaches its env runners, replay and learner only through the small part
of Ray's API below (``remote``, ``options``, ``get``, ``wait``, ``put``, ``kill``). :class:`Inline` offers that
part and runs every call in this process when it is made, handing back a reference that is already done; so
the one loop (replay ratio, logging, evaluation, checkpoints, resume, max_time_s) serves both modes, and on a
small machine the learner gets every core instead of one of two, and no batch crosses an object store.

Ray passes values between processes by copy; here they are shared, so what the loop keeps (weights, learner
state) must be copies when it is made (``Learner.weights`` and ``Learner.state`` return copies).
:meth:`Inline.wait` returns the oldest reference first: collecting and learning then alternate in the order
the loop submitted them, as they do on a cluster with free cores.
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any

_order = itertools.count()


class Done:
    """A finished call's result (the counterpart of an ObjectRef)."""

    __slots__ = ("value", "order")

    def __init__(self, value: Any):
        self.value, self.order = value, next(_order)


def _resolve(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Ray resolves references passed as arguments; so does this."""
    value = lambda v: v.value if isinstance(v, Done) else v  # noqa: E731
    return tuple(value(a) for a in args), {k: value(v) for k, v in kwargs.items()}


class _Call:
    """``handle.method`` or a remote function: ``.remote(...)`` runs it now."""

    def __init__(self, fn: Callable, num_returns: int = 1):
        self.fn, self.num_returns = fn, num_returns

    def options(self, num_returns: int = 1, **_resources: Any) -> _Call:
        return _Call(self.fn, num_returns)

    def remote(self, *args: Any, **kwargs: Any) -> Done | tuple[Done, ...]:
        args, kwargs = _resolve(args, kwargs)
        result = self.fn(*args, **kwargs)
        return Done(result) if self.num_returns == 1 else tuple(Done(r) for r in result)


class _Handle:
    """An "actor": an object of this process whose methods are called through ``.remote``."""

    def __init__(self, obj: Any):
        self._obj = obj

    def __getattr__(self, name: str) -> _Call:
        return _Call(getattr(self._obj, name))


class _Remote:
    """What ``ray.remote(cls_or_function)`` returns: ``.remote(...)`` builds the object or calls the function."""

    def __init__(self, target: Callable):
        self.target = target

    def options(self, **_resources: Any) -> _Remote:
        return self

    def remote(self, *args: Any, **kwargs: Any) -> _Handle | Done:
        args, kwargs = _resolve(args, kwargs)
        if isinstance(self.target, type):
            return _Handle(self.target(*args, **kwargs))
        return Done(self.target(*args, **kwargs))


class _Exceptions:
    class RayError(Exception):
        """Never raised here: an inline call's own exception surfaces where the loop made the call."""

    class RayActorError(RayError):
        pass


class Inline:
    """The part of the ``ray`` module the DQN driver uses, run in this process at call time."""

    exceptions = _Exceptions

    def remote(self, target: Callable | None = None, **_resources: Any) -> Any:
        if target is None:  # ray.remote(num_cpus=0)(target)
            return _Remote
        return _Remote(target)

    def get(self, refs: Done | list[Done]) -> Any:
        return [r.value for r in refs] if isinstance(refs, list) else refs.value

    def wait(self, refs: list[Done], num_returns: int = 1, timeout: float | None = None) -> tuple[list[Done], list[Done]]:
        ordered = sorted(refs, key=lambda r: r.order)
        return ordered[:num_returns], ordered[num_returns:]

    def put(self, value: Any) -> Done:
        return Done(value)

    def kill(self, handle: _Handle) -> None:
        close = getattr(getattr(handle._obj, "env", None), "close", None)
        if close is not None:
            close()

    def cluster_resources(self) -> dict[str, float]:
        import torch

        return {"CPU": float(len(os.sched_getaffinity(0))), "GPU": float(torch.cuda.device_count())}
