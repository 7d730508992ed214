"""Where a cluster job keeps its run folder, and the checks that keep it readable.

* a local path: fine for one node (a laptop, a one-node cluster);
* a shared path (``storage.shared: true``): the same filesystem on every node (NFS, EFS, Filestore,
  a ReadWriteMany volume); fine for any run;
* an ``s3://`` / ``gs://`` URI: any job on any number of nodes. Ray Train and Tune write their
  checkpoints there; our own files are written to a scratch folder on the node that writes them and
  mirrored there (:mod:`dl_ray.cluster.mirror`: by each worker or trial, and by a ``dl-ray dqn`` job's
  driver, the only writer of an RL run).

A run whose files are written on several nodes (Ray Train workers, Tune trials) on a cluster of
several nodes, or one that may grow (an autoscaler runs), needs a shared filesystem or a bucket:
anything else scatters the run folder over the nodes. :func:`check_nodes` refuses that and
:func:`check_bucket` an unreachable bucket before the job is sent; :func:`probe_shared` checks at
the job's start that every node sees a ``storage.shared`` path.
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path, PurePosixPath
from typing import Any

import requests
from pydantic import ValidationError

from dl_ray.cluster.mirror import STORAGE_ENV
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
    """Why this run may write from several nodes (None when only its driver writes: an RL run, whose actors and
    learner send what they make back to the driver)."""
    if command == "dqn":
        return None
    if command != "train":
        return f"`dl-ray {command}` places trials on any node"
    workers = (raw.get("scaling") or {}).get("num_workers", 0)
    return f"scaling.num_workers={workers} places Ray Train workers on any node" if workers else None


def check_path(storage: StorageSpec) -> None:
    """A cluster job needs a path that means the same on the cluster as here."""
    if not storage.is_uri and not PurePosixPath(storage.path).is_absolute():
        raise SpecError(f"storage.path: {storage.path!r} is relative, so on the cluster it would land in the job's "
                        "temporary working folder and be lost; give an absolute path every node sees "
                        "(e.g. --set storage.path=/mnt/shared/runs --set storage.shared=true) or an s3:// / gs:// URI")


def check_nodes(storage: StorageSpec, command: str, raw: dict[str, Any], nodes: int, address: str,
                autoscaling: bool = False) -> None:
    """Refuse storage that one node cannot read back when the run may write from several nodes, now or once an
    autoscaler has added some (a cluster of one head with min_workers 0 grows when the job asks for workers)."""
    why = spreads(command, raw)
    if (nodes <= 1 and not autoscaling) or why is None or storage.shared or storage.is_uri:
        return
    size = f"{nodes} node(s) and an autoscaler that adds more" if autoscaling else f"{nodes} nodes"
    raise SpecError(f"storage.path: {storage.path} is node-local (storage.shared: false), but the cluster at {address} "
                    f"has {size} and {why}: the run folder would be scattered over them. Use a filesystem every node mounts "
                    "at the same path (NFS, EFS, Filestore, a ReadWriteMany volume, a bucket mounted with gcsfuse / mountpoint-s3) with "
                    "--set storage.path=/mnt/shared/runs --set storage.shared=true, or an s3:// / gs:// bucket")


def autoscaling(address: str) -> bool:
    """Whether an autoscaler manages the cluster (``ray up`` configs, KubeRay), from :func:`cluster_status`."""
    return node_types_managed(cluster_status(address))


def cluster_status(address: str) -> str:
    """The status text the dashboard formats (``/api/cluster_status?format=1``, what ``ray status`` prints): the
    same for Ray's autoscaler v1 and v2 (v2 writes none of the v1 status the unformatted call returns); "" when
    the dashboard does not answer it."""
    from dl_ray.cluster.auth import auth_headers

    try:
        reply = requests.get(f"{address}/api/cluster_status", params={"format": "1"}, headers=auth_headers(), timeout=5)
        status = (reply.json().get("data") or {}).get("clusterStatus") if reply.ok else None
    except (requests.RequestException, ValueError):
        return ""
    return status if isinstance(status, str) else ""


# A node that no autoscaler launched (`ray start` by hand) is listed under a type named after its id (node_<hex>);
# `ray up` and KubeRay name every node they start after its type in the config (RAY_NODE_TYPE_NAME).
READONLY_TYPE = re.compile(r"node_[0-9a-f]{16,}", re.IGNORECASE)
NODE_LINES = (re.compile(r"^\s+\d+\s+(\S+)\s*$", re.M),  # " 1 ray.head.default" (Active: / Idle:)
              re.compile(r"^\s+(\S+), \d+ launching\s*$", re.M))  # " ray.worker.gpu, 1 launching" (Pending:)


def node_types_managed(status: str) -> bool:
    """Whether ``ray status`` text names node types of a cluster config (ray.head.default, ray.worker.gpu, a KubeRay
    group), which an autoscaler launches more of, rather than the id-named types of nodes started by hand."""
    types = {t for pattern in NODE_LINES for t in pattern.findall(status)}
    return any(not READONLY_TYPE.fullmatch(t) for t in types)


# ---------------------------------------------------------------- buckets

CREDENTIALS = {
    "s3": ("AWS credentials", ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                               "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"),
           (("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"), ("AWS_CONFIG_FILE", "~/.aws/config")),
           ("AWS_EC2_METADATA_DISABLED", "http://169.254.169.254/latest/api/token"),
           "set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run `aws configure`"),
    "gs": ("Google Cloud credentials", ("GOOGLE_APPLICATION_CREDENTIALS",),
           (("CLOUDSDK_CONFIG", "~/.config/gcloud/application_default_credentials.json"),),
           ("NO_GCE_CHECK", "http://metadata.google.internal/computeMetadata/v1/"),
           "run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS"),
}


def credentials_found(scheme: str) -> bool:
    """Whether the cloud SDK's default chain can find credentials here: variables, files, the VM's metadata server."""
    _, variables, files, (off_switch, metadata_url), _ = CREDENTIALS[scheme]
    if any(os.environ.get(v) for v in variables):
        return True
    for variable, default in files:
        path = Path(os.environ.get(variable) or default).expanduser()
        if variable == "CLOUDSDK_CONFIG" and os.environ.get(variable):
            path = path / "application_default_credentials.json"
        if path.is_file():
            return True
    if os.environ.get(off_switch, "").lower() in ("true", "1"):
        return False
    try:  # a cloud VM's own identity (instance profile, service account); 1 s: elsewhere nothing answers
        requests.put(metadata_url, headers={"X-aws-ec2-metadata-token-ttl-seconds": "60", "Metadata-Flavor": "Google"},
                     timeout=1)
    except requests.RequestException:
        return False
    return True


def check_bucket(uri: str, field: str = "storage.path") -> None:
    """The bucket answers and lists with this machine's credentials; one line naming what is wrong otherwise, and the
    ``field`` that gave the bucket."""
    from pyarrow import fs

    scheme, _, rest = uri.partition("://")
    bucket = rest.split("/", 1)[0]
    what, *_, help_ = CREDENTIALS[scheme]
    if not credentials_found(scheme):
        raise SpecError(f"{field}: {uri} needs {what} and none were found on this machine; {help_}")
    try:
        filesystem, path = fs.FileSystem.from_uri(uri)
        if filesystem.get_file_info(bucket).type == fs.FileType.NotFound:
            raise SpecError(f"{field}: the bucket {bucket!r} of {uri} does not exist; create it or fix the name")
        filesystem.get_file_info(fs.FileSelector(path, allow_not_found=True))
    except OSError as e:
        text = " ".join(str(e).split())
        reason = next((why for why, marks in BUCKET_ERRORS.items() if any(m in text for m in marks)), "failed")
        raise SpecError(f"{field}: {uri} {reason}: {text[:300]}") from None


BUCKET_ERRORS = {  # words of the cloud SDKs' errors (as pyarrow passes them on) -> what to tell the user
    "refused the credentials": ("ACCESS_DENIED", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "PermissionDenied"),
    "is unreachable": ("NETWORK_CONNECTION", "Could not connect", "Couldn't resolve", "Could not resolve", "Timeout"),
}


# ---------------------------------------------------------------- a shared path, seen from every node

PROBE_FOLDER = ".dl_ray_probe"


def check_at_start(storage: StorageSpec, spreads: str | None) -> None:
    """On the cluster, before training starts (the driver joined Ray): a ``storage.shared`` path must be one
    folder on every node; node-local storage is refused when the run writes from several nodes (``spreads``
    says why it does: Ray Train workers, Tune trials) on a cluster of several (a job started on a cluster
    without ``dl-ray submit``, or one whose cluster grew since ``dl-ray submit`` checked it)."""
    import ray

    if storage.is_uri or os.environ.get(STORAGE_ENV):  # a bucket: each writer mirrors its files from its own node
        return
    if storage.shared:
        probe_shared(storage.path)
        return
    alive = sum(1 for n in ray.nodes() if n["Alive"])
    if spreads and alive > 1:
        raise SpecError(f"storage.path: {storage.path} is node-local (storage.shared: false), but this cluster has {alive} "
                        f"nodes and {spreads}: the run folder would be scattered over them. Use --set "
                        "storage.path=/mnt/shared/runs --set storage.shared=true (a filesystem every node mounts) or "
                        "an s3:// / gs:// bucket")


def probe_shared(path: str, timeout_s: float = 120) -> None:
    """Every alive node writes a probe file into ``path``, then reads every other node's: a node that cannot
    write there, or does not see the others' files, is one :class:`SpecError` naming ``path`` and the node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
    if len(nodes) < 2:
        return
    folder = f"{path}/{PROBE_FOLDER}/{secrets.token_hex(4)}"
    step = ray.remote(num_cpus=0, max_retries=0)(_probe_step)

    def on_every_node(action: str) -> dict[str, str | None]:
        refs = {node: step.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                .remote(action, folder, node, list(nodes)) for node in nodes}
        try:
            return dict(zip(refs, ray.get(list(refs.values()), timeout=timeout_s)))
        except ray.exceptions.RayError as e:  # a node lost meanwhile, or one that cannot start the job's tasks
            raise SpecError(f"storage.path: could not check that every node sees {path} (storage.shared: true): "
                            f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:200]}") from None

    try:
        for action in ("write", "read"):
            for node, problem in on_every_node(action).items():
                if problem:
                    raise SpecError(f"storage.path: {path} (storage.shared: true) is not one folder on every node: node "
                                    f"{nodes[node]} ({node[:8]}) {problem}; mount the shared filesystem at {path} on "
                                    "every node, or use an s3:// / gs:// bucket")
    finally:
        on_every_node("clean")


def _probe_step(action: str, folder: str, node: str, all_nodes: list[str]) -> str | None:
    """One node's part of :func:`probe_shared` (runs on that node): None when fine, else what went wrong."""
    here = Path(folder)
    if action == "write":
        try:
            here.mkdir(parents=True, exist_ok=True)
            (here / node).write_text(node)
        except OSError as e:
            return f"cannot write there ({e.strerror})"
        return None
    if action == "read":
        missing = [other[:8] for other in all_nodes if not (here / other).is_file()]
        return f"does not see the probe files node(s) {', '.join(missing)} wrote there" if missing else None
    (here / node).unlink(missing_ok=True)
    for folder_ in (here, here.parent):
        try:
            folder_.rmdir()
        except OSError:  # another node's probe is still there, or the folder is gone already
            break
    return None
