"""Ray token authentication, as Ray 2.60 defines it, and the cluster's HTTP address.

Ray reads the token from ``RAY_AUTH_TOKEN`` (the value), else the file named by
``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``; a cluster checks it when it
was started with ``RAY_AUTH_MODE=token``. We send it as a bearer header
ourselves, so ``dl-ray`` talks to an authenticated cluster without ``RAY_AUTH_MODE``
set on the laptop.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from dl_ray.cluster import ClusterError

DEFAULT_DASHBOARD_PORT = 8265


def token_path() -> Path:
    """Where Ray looks for the token file (``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``)."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()


def read_token() -> str | None:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = token_path()
    if not path.is_file():
        return None
    return path.read_text().strip() or None


def ensure_token() -> Path | None:
    """Make sure a token exists for a new cluster; returns the file holding it (None: it is in RAY_AUTH_TOKEN)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    path = token_path()
    if not path.is_file() or not path.read_text().strip():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return path


def auth_headers() -> dict[str, str]:
    token = read_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def resolve_address(flag: str | None, spec_address: str | None = None) -> str:
    """``--address``, else ``RAY_ADDRESS`` (empty: unset), else the job file's ``cluster.address``; as an http(s) URL."""
    from dl_ray.ray_address import DASHBOARD_FORMS, from_env, is_dashboard_address

    env = from_env()
    address = flag or env or spec_address
    source = "--address" if flag else "RAY_ADDRESS" if env else "cluster.address"
    if not address:
        raise ClusterError("no cluster address: pass --address http://127.0.0.1:8265, export RAY_ADDRESS, or set "
                           "cluster.address in the job file (`dl-ray cluster up` starts a local cluster)")
    address = address.strip().rstrip("/")
    if address.startswith(("ray://", "auto")) or address.count(":") == 1 and address.rsplit(":", 1)[1] in ("6379", "10001"):
        raise ClusterError(f"address {address!r} is a Ray core/client address; Jobs use the dashboard's HTTP address, "
                           f"e.g. http://127.0.0.1:{DEFAULT_DASHBOARD_PORT} (reach a remote one with `ray dashboard` "
                           "or `kubectl port-forward`)")
    if not is_dashboard_address(address):
        raise ClusterError(f"{source}={address!r} is not a Ray dashboard address; allowed: {DASHBOARD_FORMS}")
    return address if "://" in address else f"http://{address}"
