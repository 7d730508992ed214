"""Which environment variables travel with a job, and which secrets stay home.

Whatever goes into a Ray ``runtime_env`` (a submitted job's, or the one a driver passes to ``ray.init``) can be
read by every holder of the cluster's token, in the dashboard and through the Jobs API. So W&B's settings
(``WANDB_PROJECT``, ``WANDB_ENTITY``, ``WANDB_BASE_URL``...) travel, but its secrets (``WANDB_API_KEY`` and any
other ``WANDB_*`` key, token, secret or password) only when a run logs online, and never when the job already
has them: a key kept on the cluster (a Kubernetes Secret as the pods' env, a ``~/.netrc`` on the nodes) is read
there by W&B itself and never shows in a runtime_env.
"""
from __future__ import annotations

from collections.abc import Mapping

WANDB = "WANDB_"
SECRET_MARKS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
NOT_FORWARDED = ("WANDB_SERVICE",)  # this process's own wandb-core: a process elsewhere must not try to join it
RAY_JOB = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray Jobs in a submitted job's driver (its runtime_env, metadata)


def is_secret(name: str) -> bool:
    return any(mark in name.removeprefix(WANDB) for mark in SECRET_MARKS)


def wandb_env(environ: Mapping[str, str], online: bool) -> dict[str, str]:
    """The ``WANDB_*`` variables of ``environ`` to pass on: settings always, secrets only for an ``online`` run."""
    return {k: v for k, v in environ.items()
            if k.startswith(WANDB) and k not in NOT_FORWARDED and (online or not is_secret(k))}


def withheld(environ: Mapping[str, str], online: bool) -> list[str]:
    """The W&B secrets of ``environ`` that :func:`wandb_env` keeps back."""
    return sorted(k for k in environ if k.startswith(WANDB) and is_secret(k) and not online)


def driver_env(environ: Mapping[str, str], wandb_mode: str, address: str | None) -> dict[str, str]:
    """What a driver passes to its workers in ``ray.init(runtime_env=...)``: ``DL_RAY_*`` and W&B settings; W&B
    secrets only where the workers could not have them otherwise: an online run whose driver joins a running
    cluster (``RAY_ADDRESS``) from a shell. A local Ray's workers inherit this process's environment, and a
    submitted job's workers get the job's runtime_env (or the cluster's own secret)."""
    joins_from_shell = bool(address) and address != "local" and RAY_JOB not in environ
    own = {k: v for k, v in environ.items() if k.startswith("DL_RAY_")}
    return own | wandb_env(environ, online=wandb_mode == "online" and joins_from_shell)
