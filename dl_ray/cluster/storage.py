"""Where a cluster job keeps its run folder, and the checks that keep it readable.

* a local path: fine for one node (a laptop, a one-node cluster);
* a shared path (``storage.shared: true``): the same filesystem on every node (NFS, EFS, Filestore,
  a ReadWriteMany volume); fine for any run;
* an ``s3://`` / ``gs://`` URI: the job writes to a scratch folder on its driver's node, and
  :mod:`dl_ray.cluster.mirror` copies it to the bucket while it runs and when it ends.

A run whose files are written on several nodes (Ray Train workers, Tune trials, RL actors) on a
cluster of several nodes needs the shared filesystem: anything else scatters the run folder over
the nodes. :func:`check` refuses that before the job is sent.
"""
from __future__ import annotations

import hashlib
from pathlib import PurePosixPath
from typing import Any

from pydantic import ValidationError

from dl_ray.spec import SpecError, StorageSpec, describe

SCRATCH = "/tmp/dl_ray-storage"  # per-node folder a bucket-backed run writes to (the same path on every node)


def storage_of(raw: dict[str, Any]) -> StorageSpec:
    """The job file's ``storage`` section, validated (any job kind: train, tune, dqn)."""
    try:
        return StorageSpec.model_validate(raw.get("storage") or {})
    except ValidationError as e:
        raise SpecError(describe(e, StorageSpec, "storage.")) from None


def scratch_for(uri: str) -> str:
    """The scratch folder a run stored at ``uri`` uses on its node (stable, so a rerun finds it)."""
    return f"{SCRATCH}/{hashlib.sha1(uri.encode()).hexdigest()[:12]}"


def spreads(command: str, raw: dict[str, Any]) -> str | None:
    """Why this run may write from several nodes (None when only its driver writes)."""
    if command != "train":
        return f"`dl-ray {command}` places trials/actors on any node"
    workers = (raw.get("scaling") or {}).get("num_workers", 0)
    return f"scaling.num_workers={workers} places Ray Train workers on any node" if workers else None


def check_path(storage: StorageSpec) -> None:
    """A cluster job needs a path that means the same on the cluster as here."""
    if not storage.is_uri and not PurePosixPath(storage.path).is_absolute():
        raise SpecError(f"storage.path: {storage.path!r} is relative, so on the cluster it would land in the job's "
                        "temporary working folder and be lost; give an absolute path every node sees "
                        "(e.g. --set storage.path=/mnt/shared/runs --set storage.shared=true) or an s3:// / gs:// URI")


def check_nodes(storage: StorageSpec, command: str, raw: dict[str, Any], nodes: int, address: str) -> None:
    """Refuse storage that one node cannot read back when the run may write from several."""
    why = spreads(command, raw)
    if nodes <= 1 or why is None or storage.shared:
        return
    kind = "a bucket mirrored from the job's driver node" if storage.is_uri else "node-local (storage.shared: false)"
    raise SpecError(f"storage.path: {storage.path} is {kind}, but the cluster at {address} has {nodes} nodes and {why}: "
                    "the run folder would be scattered over them. Use a filesystem every node mounts at the same path "
                    "(NFS, EFS, Filestore, a ReadWriteMany volume, a bucket mounted with gcsfuse / mountpoint-s3) with "
                    "--set storage.path=/mnt/shared/runs --set storage.shared=true")
