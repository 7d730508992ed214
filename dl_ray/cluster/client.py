"""A ``JobSubmissionClient`` that fails with one clear line instead of a traceback.

Ray's client raises ``ConnectionError`` for a dead address, ``RuntimeError("...404...")``
for an unknown job and ``AuthenticationError`` for a missing/wrong token, and its
HTTP calls have no timeout. :func:`connect` checks the address first (5 s), and
:func:`explained` turns those errors into :class:`ClusterError` lines.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import requests

from dl_ray.cluster import ClusterError
from dl_ray.cluster.auth import auth_headers

HOW_TO_REACH = ("start one with `dl-ray cluster up`, or open a tunnel to yours "
                "(`ray dashboard cluster/aws.yaml`, `kubectl port-forward svc/dl-ray-head-svc 8265:8265`)")
TOKEN_HELP = ("set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token: `ray get-auth-token` on the head, "
              "or `kubectl get secret dl-ray-auth -o jsonpath='{.data.auth_token}' | base64 -d`")


RAY_REFUSALS = ("Unauthorized:", "Forbidden:")  # how Ray's token check words its 401 / 403 (another server's differ)


def _is_ray_version(reply: requests.Response) -> bool:
    """Ray's ``/api/version`` answers a JSON object with its ``ray_version`` (any other server does not)."""
    try:
        body = reply.json()
    except ValueError:
        return False
    return reply.ok and isinstance(body, dict) and isinstance(body.get("ray_version"), str)


def connect(address: str):
    """A Jobs client for ``address`` (http URL), with the token from RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / ~/.ray."""
    headers = auth_headers()
    try:
        reply = requests.get(f"{address}/api/version", headers=headers, timeout=5)
    except requests.RequestException as e:
        raise ClusterError(f"cannot reach a Ray cluster at {address} ({_reason(e)}); {HOW_TO_REACH}") from None
    if reply.status_code in (401, 403) and reply.text.startswith(RAY_REFUSALS):
        problem = "needs a token" if not headers else "refused the token"
        raise ClusterError(f"the Ray cluster at {address} {problem} (token authentication is on); {TOKEN_HELP}")
    if not _is_ray_version(reply):
        raise ClusterError(f"{address} answered HTTP {reply.status_code} but is not a Ray dashboard (no Ray version at "
                           f"{address}/api/version); give the dashboard's address (port 8265 by default); {HOW_TO_REACH}")

    from ray.job_submission import JobSubmissionClient

    logging.getLogger("ray").setLevel(logging.WARNING)  # after importing Ray, which sets it: no "Uploading package..."
    with explained(address):
        return JobSubmissionClient(address, headers=headers)


@contextmanager
def explained(address: str, job_id: str | None = None) -> Iterator[None]:
    """Turn the Jobs SDK's errors into one-line :class:`ClusterError` messages."""
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError:
        raise ClusterError(f"the Ray cluster at {address} refused the token; {TOKEN_HELP}") from None
    except (ConnectionError, requests.RequestException) as e:
        raise ClusterError(f"lost the Ray cluster at {address} ({_reason(e)}); {HOW_TO_REACH}") from None
    except RuntimeError as e:
        if job_id is not None and "404" in str(e):
            raise ClusterError(f"no job {job_id!r} on {address}; `dl-ray jobs list` shows its jobs") from None
        raise ClusterError(f"the Ray cluster at {address} refused the request: {str(e).strip()[:300]}") from None


def _reason(error: BaseException) -> str:
    text = str(error)
    for marker in ("Connection refused", "Name or service not known", "timed out", "No route to host"):
        if marker in text:
            return marker.lower()
    return type(error).__name__
