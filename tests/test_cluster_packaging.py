"""What a submitted job carries (project files, never secrets), storage rules, the bucket mirror: no cluster needed."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from dl_ray.cli import main as cli_main
from dl_ray.cluster import package, storage
from dl_ray.cluster.mirror import Mirror
from dl_ray.cluster.mirror import main as mirror_main
from dl_ray.cluster.submit import detect_command, prepare
from dl_ray.spec import SpecError, StorageSpec, load_spec
from tests.conftest import ROOT, Lines


SECRETS = {  # what lies around real checkouts: none of it may leave the laptop
    "key.json": '{"private_key": "k"}', "my-project-4f2a1b.json": '{"type": "service_account", "private_key": "k"}',
    ".envrc": "export AWS_SECRET_ACCESS_KEY=x", ".kube/config": "token: x", ".pypirc": "password = x",
    ".docker/config.json": '{"auths": {}}', "terraform.tfstate": "{}", "infra/terraform.tfstate.backup": "{}",
    "id_ecdsa": "-----BEGIN-----", ".env": "WANDB_API_KEY=secret\n", "keys/server.pem": "-----BEGIN-----",
    "notes/aws_credentials.txt": "AKIA...", "jobs/.env": "WANDB_API_KEY=secret\n", "dl_ray/id_ed25519": "k",
    "jobs/gcp-credentials.json": "{}", "dl_ray/models/.envrc": "export X=1",
}


def make_project(root: Path, cli: str = "print()\n") -> Path:
    files = {
        "pyproject.toml": "[project]\nname = 'dl_ray'\n", "README.md": "# dl_ray\n", "dl_ray/cli.py": cli,
        "jobs/a.yaml": "name: a\n", "dl_ray/models/mlp.py": "x = 1\n", "tests/test_x.py": "", "notebook.ipynb": "{}",
        "runs/a/metrics.csv": "epoch\n1\n", "wandb/run-1/files.txt": "x", ".git/config": "[core]", ".venv/bin/python": "",
        "dl_ray/__pycache__/cli.cpython-311.pyc": "", "dl_ray/models/mlp.pyc": "", "jobs/.DS_Store": "", "jobs/a.yaml~": "",
        "data_cache/big.npy": "0" * 1000, "weights/r18.pth": "w", **SECRETS,
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


CODE = ["README.md", "dl_ray/cli.py", "dl_ray/models/mlp.py", "jobs/a.yaml", "pyproject.toml"]


def test_project_files_is_the_allow_list_cluster_configs_sync():
    assert package.PROJECT_FILES == ("dl_ray", "jobs", "pyproject.toml", "README.md")


def test_only_the_allow_list_is_packed_and_no_secret_lying_in_the_checkout_is(tmp_path):
    root = make_project(tmp_path / "project")
    files = package.collect(root / "jobs" / "a.yaml")
    assert files.files == CODE and files.job_entry == "jobs/a.yaml" and not files.extra
    with zipfile.ZipFile(files.write_zip(tmp_path / "p.zip")) as zf:
        names = zf.namelist()
    assert names == CODE
    assert not [name for name in SECRETS if any(Path(n).name == Path(name).name for n in names)]


def test_the_files_a_job_names_inside_the_project_travel_with_it(tmp_path):
    root = make_project(tmp_path / "project")
    (root / "jobs" / "sweeps").mkdir()
    sweep = root / "jobs" / "sweeps" / "s.yaml"
    raw = {"base": "../a.yaml", "model": {"weights": "weights/r18.pth"}, "data": {"path": "data_cache"},
           "tune": {"space": {"model.weights": {"choice": ["nothing.pth", "/etc/hostname", "../../../outside.txt"]}}}}
    sweep.write_text(yaml.safe_dump(raw))
    (tmp_path / "outside.txt").write_text("not the project's")
    files = package.collect(sweep, raw)
    assert files.files == sorted([*CODE, "jobs/sweeps/s.yaml", "weights/r18.pth"])  # files only, inside only


def test_this_checkout_packs_its_code_and_job_files_and_nothing_else():
    files = package.collect(ROOT / "jobs" / "mnist_lenet.yaml")
    assert files.root == ROOT and "dl_ray/cli.py" in files.files and "pyproject.toml" in files.files
    assert {Path(f).parts[0] for f in files.files} <= set(package.PROJECT_FILES)
    assert not [f for f in files.files if "__pycache__" in f or f.endswith(".pyc")]


def test_the_project_holding_the_job_file_is_packed_whichever_clone_you_stand_in(tmp_path, monkeypatch):
    template = make_project(tmp_path / "template")
    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(template, one)
    shutil.copytree(template, two)
    (two / "dl_ray" / "cli.py").write_text("print('two')\n")
    (two / "jobs" / "deep").mkdir()
    (two / "jobs" / "deep" / "pyproject.toml").write_text("[project]\nname = 'other'\n")  # not dl_ray's: walked past
    (two / "jobs" / "deep" / "b.yaml").write_text("name: b\n")
    monkeypatch.chdir(one)
    files = package.collect(two / "jobs" / "deep" / "b.yaml")
    assert files.root == two.resolve() and files.job_entry == "jobs/deep/b.yaml"
    assert files.where == f"the project holding the job file, {two.resolve()}"
    with zipfile.ZipFile(files.write_zip(tmp_path / "p.zip")) as zf:
        assert zf.read("dl_ray/cli.py") == b"print('two')\n"


def test_a_job_file_outside_any_project_travels_with_the_current_folders_project_and_the_zip_is_deterministic(
        tmp_path, monkeypatch):
    root = make_project(tmp_path / "project")
    job = tmp_path / "elsewhere" / "b.yaml"
    job.parent.mkdir()
    job.write_text("name: b\n")
    monkeypatch.chdir(root / "dl_ray" / "models")  # anywhere inside the checkout
    files = package.collect(job)
    assert files.root == root.resolve() and files.where.startswith(f"the current folder's project {root.resolve()}")
    assert files.job_entry == "_dl_ray_job/b.yaml" and files.extra == {"_dl_ray_job/b.yaml": job.resolve()}
    first = files.write_zip(tmp_path / "1.zip").read_bytes()
    second = files.write_zip(tmp_path / "2.zip").read_bytes()
    assert first == second  # same files -> same Ray package hash -> uploaded once
    with zipfile.ZipFile(tmp_path / "1.zip") as zf:
        assert zf.read("_dl_ray_job/b.yaml") == b"name: b\n" and zf.namelist() == sorted([*CODE, "_dl_ray_job/b.yaml"])


def test_a_job_file_and_a_current_folder_outside_any_project_is_one_line_saying_what_to_do(tmp_path, monkeypatch, capsys):
    job = tmp_path / "b.yaml"
    job.write_text(yaml.safe_dump({"name": "b", "model": {"name": "mlp"}, "data": {"name": "digits"},
                                   "storage": {"path": "/mnt/shared/runs", "shared": True}}))
    monkeypatch.chdir(tmp_path)
    assert cli_main(["submit", str(job), "--address", "http://127.0.0.1:9"]) == 2  # refused before any connection
    assert capsys.readouterr().err == (
        f"error: {job.resolve()} is not inside a dl_ray project (a folder whose pyproject.toml names dl_ray), and "
        f"neither is the current folder {tmp_path.resolve()}: run `dl-ray submit` from your dl_ray checkout or move "
        "the job file into the checkout's jobs/ folder\n")


def test_a_zip_over_rays_limit_is_refused_naming_the_biggest_folders(tmp_path, monkeypatch):
    root = make_project(tmp_path / "project")
    (root / "dl_ray" / "weights.bin").write_bytes(os.urandom(100_000))  # does not compress
    monkeypatch.setenv("RAY_max_grpc_message_size", "50000")
    files = package.collect(root / "jobs" / "a.yaml")
    with pytest.raises(package.ClusterError, match=r"zips to .* KiB, over Ray's upload limit of 48.8 KiB; biggest: dl_ray"):
        files.write_zip(tmp_path / "p.zip")
    monkeypatch.delenv("RAY_max_grpc_message_size")
    assert package.size_limit() == 100 * 1024**2  # the dashboard's request limit binds before the GCS one


@pytest.mark.parametrize("raw, command", [
    ({"model": {}, "data": {}}, "train"),
    ({"kind": "gan", "model": {}}, "train"),
    ({"kind": "sweep", "model": {}, "tune": {"space": {}}}, "tune"),
    ({"kind": "dqn", "env": {"id": "CartPole-v1"}}, "dqn"),
    ({"kind": "q_learning"}, "dqn"),
])
def test_the_command_is_read_from_the_job_file(raw, command):
    assert detect_command(raw) == command


def test_shipped_job_files_are_recognised():
    for path, command in (("jobs/mnist_lenet.yaml", "train"), ("jobs/sweeps/digits_tiny.yaml", "tune"),
                          ("jobs/rl/dqn_cartpole.yaml", "dqn")):
        if (ROOT / path).is_file():
            assert detect_command(yaml.safe_load((ROOT / path).read_text())) == command, path


def test_a_sweep_over_a_base_job_is_checked_with_the_base_jobs_storage(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"name": "b", "storage": {"path": "/mnt/shared/runs", "shared": True}}))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"kind": "sweep", "name": "s", "base": "base.yaml", "tune": {"space": {}}}))
    sub = prepare(str(tmp_path / "sweep.yaml"), None, ["tune.num_samples=2"], ["train", "tune"])
    assert sub.command == "tune" and sub.storage == StorageSpec(path="/mnt/shared/runs", shared=True) and sub.name == "s"
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"name": "b"}))  # its default storage: runs, relative
    with pytest.raises(SpecError, match="storage.path: 'runs' is relative"):
        prepare(str(tmp_path / "sweep.yaml"), None, [], ["train", "tune"])
    with pytest.raises(SpecError, match="--command: 'dqn' is not a dl-ray command that runs a job file; allowed: train, tune"):
        prepare(str(tmp_path / "sweep.yaml"), "dqn", [], ["train", "tune"])


def test_storage_accepts_paths_and_bucket_uris_and_names_the_allowed_forms():
    assert StorageSpec(path="s3://bucket/runs").is_uri and not StorageSpec(path="s3://bucket/runs").node_local
    assert StorageSpec(path="gs://bucket").is_uri
    assert StorageSpec(path="/mnt/shared/runs", shared=True).node_local is False
    assert StorageSpec(path="runs").node_local
    for bad in ("ftp://host/runs", "s3://", "hdfs://nn/runs"):
        with pytest.raises(ValueError, match="s3://bucket/prefix or gs://bucket/prefix"):
            StorageSpec(path=bad)


def test_local_runs_refuse_a_bucket_and_say_how_to_use_it(tmp_path):
    job = tmp_path / "j.yaml"
    job.write_text(yaml.safe_dump({"name": "j", "model": {"name": "mlp"}, "data": {"name": "digits"}}))
    with pytest.raises(SpecError, match="is a bucket, and a run writes to a folder: send the job with `dl-ray submit`"):
        load_spec(job, ["storage.path=gs://b/runs"])


def test_storage_checks_for_cluster_jobs():
    raw_workers = {"scaling": {"num_workers": 2}}
    storage.check_nodes(StorageSpec(path="/data/runs"), "train", {}, nodes=3, address="A")  # only the driver writes
    storage.check_nodes(StorageSpec(path="/data/runs"), "train", raw_workers, nodes=1, address="A")  # one node
    storage.check_nodes(StorageSpec(path="/mnt/shared", shared=True), "tune", {}, nodes=3, address="A")
    with pytest.raises(SpecError, match=r"node-local .* 3 nodes and scaling.num_workers=2 places Ray Train workers"):
        storage.check_nodes(StorageSpec(path="/data/runs"), "train", raw_workers, nodes=3, address="A")
    with pytest.raises(SpecError, match=r"node-local .* 2 nodes and `dl-ray tune` places trials on any node"):
        storage.check_nodes(StorageSpec(path="/data/runs"), "tune", {}, nodes=2, address="A")
    storage.check_nodes(StorageSpec(path="/data/runs"), "dqn", {}, nodes=3, address="A")  # its driver is its only writer
    storage.check_nodes(StorageSpec(path="s3://b/runs"), "tune", {}, nodes=2, address="A")  # each trial mirrors its folder
    with pytest.raises(SpecError, match="is relative"):
        storage.check_path(StorageSpec(path="runs"))
    assert storage.scratch_for("s3://b/runs") == storage.scratch_for("s3://b/runs") != storage.scratch_for("s3://b/other")


def test_mirror_resumes_from_the_bucket_copies_the_run_back_and_keeps_the_exit_code(tmp_path):
    bucket, scratch = tmp_path / "bucket", tmp_path / "scratch"
    (bucket / "run1").mkdir(parents=True)
    (bucket / "run1" / "metrics.csv").write_text("epoch\n1\n")  # an earlier attempt
    script = ("import pathlib, sys; d = pathlib.Path(sys.argv[1]) / 'run1'; "
              "assert (d / 'metrics.csv').read_text() == 'epoch\\n1\\n'; "  # the earlier attempt was pulled
              "(d / 'metrics.csv').write_text('epoch\\n1\\n2\\n'); (d / 'ckpt').mkdir(); (d / 'ckpt' / 's.pt').write_bytes(b'w'); "
              "sys.exit(3)")
    handlers = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)]
    code = mirror_main([f"file://{bucket}", str(scratch), "run1", "--", sys.executable, "-c", script, str(scratch)])
    assert code == 3
    # run in-process, it hands the signals back: a handler left behind makes every later fork ignore SIGTERM
    assert [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)] == handlers
    assert (bucket / "run1" / "metrics.csv").read_text() == "epoch\n1\n2\n"
    assert (bucket / "run1" / "ckpt" / "s.pt").read_bytes() == b"w"

    mirror = Mirror(f"file://{bucket}/run1", scratch / "run1")
    assert mirror.pull() == 2 and mirror.push() == 0  # nothing changed since: nothing is sent again


def test_mirror_passes_a_stop_on_to_the_job(tmp_path):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    script = ("import pathlib, signal, sys, time\n"
              "def bye(*_):\n    (pathlib.Path(sys.argv[1]) / 'run' / 'stopped.txt').write_text('yes'); sys.exit(143)\n"
              "signal.signal(signal.SIGTERM, bye); (pathlib.Path(sys.argv[1]) / 'run').mkdir(parents=True)\n"
              "print('ready', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-m", "dl_ray.cluster.mirror", f"file://{bucket}", str(tmp_path / "s"), "run",
                             "--", sys.executable, "-c", script, str(tmp_path / "s")], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    Lines(proc.stdout).wait_for(lambda line: "ready" in line, timeout_s=60)  # the job's SIGTERM handler is set
    proc.terminate()
    assert proc.wait(timeout=30) == 143
    assert (bucket / "run" / "stopped.txt").read_text() == "yes"
