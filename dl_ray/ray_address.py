"""``RAY_ADDRESS``, read in one place and checked before a command writes anything.

Ray reads the variable itself, and not alike everywhere: empty counts as unset for ``ray.init()`` but is
``Invalid address format`` for ``ray.init(address="")``, and a value that is no address at all fails deep
inside ``ray.init`` with a traceback, after the run folder was made. So ``dl-ray`` reads it only through
here: empty (or blank) is unset, and anything else must be a form Ray takes, else it is one
:class:`SpecError` line naming the variable and the forms allowed (exit 2, nothing written).

Two readers want different forms: a driver that starts or joins Ray (``dl-ray train`` with Ray Train
workers, ``tune``, ``dqn``) takes a Ray core address; ``dl-ray submit`` / ``jobs`` take the dashboard's
HTTP address (:func:`dl_ray.cluster.auth.resolve_address`).
"""
from __future__ import annotations

import os
import re

from dl_ray.spec import SpecError

VARIABLE = "RAY_ADDRESS"
DRIVER_FORMS = "host:port, ray://host:port, auto, local"
# host (a name, an IPv4 address or an [IPv6] address) and a port; Ray's own parser takes "a b:1" or "h:x" too
HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})")
DASHBOARD_FORMS = "http://host:port, https://host[:port][/path], host:port"
DASHBOARD = re.compile(r"(?:https?://)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::\d{1,5})?(?:/\S*)?")


def from_env() -> str | None:
    """``RAY_ADDRESS`` without surrounding blanks; None when it is unset, empty or blank."""
    return (os.environ.get(VARIABLE) or "").strip() or None


def is_host_port(text: str) -> bool:
    match = HOST_PORT.fullmatch(text)
    return match is not None and 0 < int(match["port"]) < 65536


def driver_address() -> str | None:
    """The address a driver's ``ray.init`` joins, from ``RAY_ADDRESS``; None: start a local Ray.

    Call it before anything is written: a bad value is a :class:`SpecError`."""
    address = from_env()
    if address is None or address in ("auto", "local"):
        return address
    if address.startswith(("http://", "https://")):
        raise SpecError(f"{VARIABLE}={address} is a Ray Jobs (dashboard) address: send the job with `dl-ray submit`, "
                        f"or set {VARIABLE} to the cluster's GCS address (host:6379); allowed: {DRIVER_FORMS}")
    if not is_host_port(address.removeprefix("ray://")):
        raise SpecError(f"{VARIABLE}={address!r} is not a Ray address; allowed: {DRIVER_FORMS} "
                        f"(unset or empty: a local Ray on this machine)")
    return address


def is_dashboard_address(text: str) -> bool:
    """An HTTP address of a Ray dashboard / Jobs API (what ``dl-ray submit`` and ``dl-ray jobs`` take)."""
    return DASHBOARD.fullmatch(text) is not None
