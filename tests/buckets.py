"""Buckets for tests: a local S3 server speaking the real protocol (moto), a GCS server (gcp-storage-emulator),
the environment that reaches each, and the files a bucket folder holds."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def s3_server():
    """A moto S3 server on a free port; pyarrow (and Ray Train) reach it through AWS_ENDPOINT_URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """Environment of a machine whose credentials reach the server; a fresh bucket per test."""
    import secrets

    from pyarrow import fs

    for name, value in s3_env(s3_server).items():
        monkeypatch.setenv(name, value)
    bucket = f"b-{secrets.token_hex(4)}"
    fs.S3FileSystem(endpoint_override=s3_server, allow_bucket_creation=True).create_dir(bucket)
    return bucket


def s3_env(endpoint: str) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="module")
def gcs_server(tmp_path_factory):
    """A GCS server on a free port (gcp-storage-emulator, the JSON API): pyarrow's Google client (and so Ray Train)
    goes there when CLOUD_STORAGE_EMULATOR_ENDPOINT says so. It signs its requests with a service-account key made
    for the test, as on a machine with credentials (without any, the client waits on the metadata server)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from gcp_storage_emulator.server import create_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    key = tmp_path_factory.mktemp("gcs") / "service_account.json"
    key.write_text(json.dumps({"type": "service_account", "project_id": "test", "private_key_id": "k1",
                               "private_key": pem, "client_email": "dl-ray-test@test.iam.gserviceaccount.com",
                               "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token"}))
    yield gcs_env(f"http://127.0.0.1:{port}", key)
    server.stop()


def gcs_env(endpoint: str, key: Path) -> dict[str, str]:
    return {"CLOUD_STORAGE_EMULATOR_ENDPOINT": endpoint, "GOOGLE_APPLICATION_CREDENTIALS": str(key),
            "GOOGLE_CLOUD_PROJECT": "test"}


@pytest.fixture(params=["s3", "gs"])
def bucket(request, monkeypatch) -> tuple[str, dict[str, str]]:
    """A fresh bucket on a local server speaking the cloud's protocol, as a URI (s3://b-..., gs://b-...), and the
    environment that reaches it (set here too)."""
    import secrets

    from pyarrow import fs

    env = s3_env(request.getfixturevalue("s3_server")) if request.param == "s3" else request.getfixturevalue("gcs_server")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    name = f"b-{secrets.token_hex(4)}"
    if request.param == "s3":
        fs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], allow_bucket_creation=True).create_dir(name)
    else:
        fs.GcsFileSystem().create_dir(name)
    return f"{request.param}://{name}", env


def bucket_tree(uri: str) -> dict[str, bytes]:
    """The bucket folder's files; fails on a folder with no file under it (an empty marker left by a delete)."""
    from pyarrow import fs

    filesystem, root = fs.FileSystem.from_uri(uri)
    infos = filesystem.get_file_info(fs.FileSelector(root, recursive=True, allow_not_found=True))
    tree = {}
    for info in (i for i in infos if i.type == fs.FileType.File):
        with filesystem.open_input_stream(info.path) as f:
            tree[info.path[len(root) + 1:]] = f.read()
    folders = {i.path[len(root) + 1:] for i in infos if i.type == fs.FileType.Directory}
    assert all(any(name.startswith(f"{folder}/") for name in tree) for folder in folders), (folders, sorted(tree))
    return tree
