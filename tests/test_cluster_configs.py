"""The cluster configs in ``cluster/`` are what Ray and KubeRay accept, and carry what the docs promise."""
from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from dl_ray.spec import load_spec
from tests.conftest import ROOT

LAUNCHER = [ROOT / "cluster" / "aws.yaml", ROOT / "cluster" / "gcp.yaml"]
KUBERAY = ROOT / "cluster" / "kuberay"
SCHEMA = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_yaml_passes_rays_own_schema_and_checks(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(path.read_text())
    jsonschema.validate(config, SCHEMA)  # the schema shipped inside the ray package
    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` runs: defaults filled in, node types checked

    broken = {**config, "max_worker": 3}  # a typo is caught: the check has teeth
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        jsonschema.validate(broken, SCHEMA)


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_yaml_is_a_cpu_head_with_autoscaling_gpu_workers_shared_storage_and_token_auth(path):
    config = yaml.safe_load(path.read_text())
    head = config["available_node_types"][config["head_node_type"]]
    workers = [t for name, t in config["available_node_types"].items() if name != config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and "guestAccelerators" not in head["node_config"]
    assert not head["node_config"].get("InstanceType", "m").startswith(("g", "p"))  # AWS GPU families: g*, p*
    assert len(workers) == 1 and workers[0]["min_workers"] == 0 and workers[0]["max_workers"] >= 2
    worker_config = str(workers[0]["node_config"])
    assert "g5." in worker_config or "nvidia-l4" in worker_config  # a GPU machine

    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)
    head_start = next(c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert "--dashboard-host=127.0.0.1" in head_start  # reached only through `ray dashboard`'s SSH tunnel
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert any("mount" in c and "/mnt/shared" in c for c in config["initialization_commands"])
    assert "--volume=/mnt/shared:/mnt/shared" in config["docker"]["run_options"]
    assert any("pip install" in c and "~/dl_ray" in c for c in config["setup_commands"])
    assert config["file_mounts"]["~/dl_ray"] == "." and ".git" in config["rsync_exclude"]


def _kuberay(name: str) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all((KUBERAY / name).read_text())}


def _check_cluster_spec(spec: dict) -> None:
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"] == {"mode": "token", "secretName": "dl-ray-auth"}
    head = spec["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP"  # never exposed: kubectl port-forward
    (gpu,) = spec["workerGroupSpecs"]
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] >= 2 and spec["enableInTreeAutoscaling"] is True
    for group in (head, gpu):
        pod = group["template"]["spec"]
        (container,) = pod["containers"]
        assert container["resources"]["requests"] == container["resources"]["limits"]
        assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert mounts["shared"] == "/mnt/shared" and volumes["shared"]["persistentVolumeClaim"]["claimName"] == "dl-ray-shared"
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in head["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_kuberay_raycluster_has_head_gpu_workers_shared_volume_and_token_auth():
    docs = _kuberay("raycluster.yaml")
    assert docs["RayCluster"]["apiVersion"] == "ray.io/v1"
    _check_cluster_spec(docs["RayCluster"]["spec"])
    claim = docs["PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == "dl-ray-shared" and claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_kuberay_rayjob_runs_the_dl_ray_command_on_shared_storage():
    job = _kuberay("rayjob.yaml")["RayJob"]
    assert job["apiVersion"] == "ray.io/v1" and job["spec"]["shutdownAfterJobFinishes"] is True
    _check_cluster_spec(job["spec"]["rayClusterSpec"])
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:2] == ["dl-ray", "train"]
    job_file = Path(words[2].replace("/home/ray/dl_ray", str(ROOT)))  # the image's copy of this checkout
    overrides = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    spec = load_spec(job_file, overrides)  # the entrypoint is a valid job, as the cluster will read it
    assert spec.storage.shared and spec.storage.path.startswith("/mnt/shared") and spec.scaling.use_gpu


def test_dockerfile_builds_on_rays_image_of_this_version_and_turns_token_auth_on():
    text = (ROOT / "cluster" / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-" in text and "-gpu" in text
    assert "RAY_AUTH_MODE=token" in text and "pip install --no-cache-dir -e ." in text
    for copied in ("pyproject.toml", "dl_ray", "jobs"):
        assert (ROOT / copied).exists() and copied in text
