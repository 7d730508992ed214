"""The project files a job carries to the cluster (Ray's ``runtime_env.working_dir``).

We build the zip ourselves, from an allow-list (:data:`PROJECT_FILES`, the job file and the files it names),
so that nothing else in the checkout leaves the laptop: a service-account key, ``.envrc`` or a Terraform
state lying next to the code is never packed, whatever its name. The project is the one holding the job
file (else the current folder's), so with two clones the job runs the code of the one it belongs to. A
package too big for Ray (100 MiB zipped: the dashboard's request limit) is refused *before* anything is
uploaded, with the biggest culprits named. Ray takes a local ``.zip`` as ``working_dir`` and
content-addresses it: the same files are uploaded once.
"""
from __future__ import annotations

import fnmatch
import os
import re
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dl_ray.cluster import ClusterError

# What is packed for the cluster and synced by ``ray up`` (cluster/*.yaml): an allow-list, so a key or token
# lying in the checkout never leaves the laptop. The job file and the files it names are added at pack time.
PROJECT_FILES = ("dl_ray", "jobs", "pyproject.toml", "README.md")
# Never packed from inside PROJECT_FILES' folders: hidden files (.env, .envrc, caches), build junk, run outputs,
# and names that usually hold a secret (a second line of defence: keys do not belong in dl_ray/ or jobs/).
EXCLUDED = (
    ".*", "__pycache__", "*.pyc", "*.pyo", "*.egg-info", "*~", "*.swp",                  # hidden, build junk
    "runs", "wandb", "ray_results", "*.ckpt",                                            # run outputs
    "*.pem", "*.key", "*.p12", "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*",         # secrets
    "*credentials*", "*secret*", "*.tfstate", "*.tfstate.*", "auth_token",
)
PROJECT_NAME = "dl-ray"  # pyproject's project.name, normalised (PEP 503): dl_ray, dl-ray and DL.Ray are one name
JOB_FOLDER = "_dl_ray_job"  # where a job file from outside the project is put inside the package
HTTP_LIMIT = 100 * 1024**2  # the largest request Ray's dashboard accepts (ray_constants.DASHBOARD_CLIENT_MAX_SIZE)
GCS_LIMIT = 512 * 1024**2  # the largest package Ray's GCS stores: one gRPC message (RAY_max_grpc_message_size)


def size_limit() -> int:
    """The largest zipped working_dir Ray's Jobs API takes in."""
    return min(HTTP_LIMIT, int(os.environ.get("RAY_max_grpc_message_size", GCS_LIMIT)))


def project_of(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` whose ``pyproject.toml`` is dl_ray's (a checkout), else None."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if _is_dl_ray_project(folder / "pyproject.toml"):
            return folder
    return None


def _is_dl_ray_project(pyproject: Path) -> bool:
    if not pyproject.is_file():
        return False
    try:
        project = tomllib.loads(pyproject.read_text()).get("project")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError):  # someone else's broken file: not ours
        return False
    name = project.get("name") if isinstance(project, dict) else None
    return isinstance(name, str) and re.sub(r"[-_.]+", "-", name).lower() == PROJECT_NAME


def excluded(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in EXCLUDED)


@dataclass
class Package:
    root: Path
    files: list[str] = field(default_factory=list)
    """Paths relative to ``root``."""
    job_entry: str = ""
    """The job file's path inside the package (what the entrypoint is given)."""
    extra: dict[str, Path] = field(default_factory=dict)
    """Package path -> local file, for files from outside ``root``."""
    where: str = ""
    """Which project this is, and why, for the line ``dl-ray submit`` prints."""

    def write_zip(self, target: Path) -> Path:
        """A deterministic zip (fixed timestamps): unchanged files give the same Ray package, uploaded once.

        Raises :class:`ClusterError` when it is over Ray's upload limit (nothing is uploaded then)."""
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            entries = [(name, self.root / name) for name in self.files] + sorted(self.extra.items())
            for name, path in sorted(entries):
                info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
                info.external_attr = (path.stat().st_mode & 0o777) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())
        _check_size(self, target.stat().st_size)
        return target


def collect(job_file: Path, raw: dict[str, Any] | None = None, cwd: Path | None = None) -> Package:
    """What goes to the cluster: :data:`PROJECT_FILES` of the project holding ``job_file`` (else of the one
    holding ``cwd``), the job file, and the project's files that the job's settings ``raw`` name."""
    job_file, cwd = job_file.resolve(), (cwd or Path.cwd()).resolve()
    root = project_of(job_file.parent)
    if root is not None:
        where = f"the project holding the job file, {root}"
    else:
        root = project_of(cwd)
        if root is None:
            raise ClusterError(f"{job_file} is not inside a dl_ray project (a folder whose pyproject.toml names dl_ray), "
                               f"and neither is the current folder {cwd}: run `dl-ray submit` from your dl_ray checkout "
                               "or move the job file into the checkout's jobs/ folder")
        where = f"the current folder's project {root} (the job file lies outside it and travels alone)"
    package = Package(root, sorted(set(_allowed_files(root)) | set(_named_files(raw or {}, job_file, root))), where=where)
    if job_file.is_relative_to(root):
        package.job_entry = job_file.relative_to(root).as_posix()
        package.files = sorted({*package.files, package.job_entry})
    else:
        package.job_entry = f"{JOB_FOLDER}/{job_file.name}"
        package.extra[package.job_entry] = job_file
    return package


def _allowed_files(root: Path) -> list[str]:
    """The files of :data:`PROJECT_FILES` under ``root``, minus :data:`EXCLUDED` names inside its folders."""
    found = [name for name in PROJECT_FILES if (root / name).is_file()]
    for top in (name for name in PROJECT_FILES if (root / name).is_dir()):
        for folder, dirs, names in os.walk(root / top):
            rel = Path(folder).relative_to(root)
            dirs[:] = [d for d in dirs if not excluded(d)]
            found += [(rel / n).as_posix() for n in names if not excluded(n) and (root / rel / n).is_file()]
    return found


def _named_files(raw: dict[str, Any], job_file: Path, root: Path) -> list[str]:
    """Files inside ``root`` that a setting names by a relative path: from the job file's folder (a sweep's
    ``base``) or from the project folder (the job's working folder on the cluster, e.g. ``model.weights``)."""
    found = set()
    for value in _strings(raw):
        for folder in (job_file.parent, root):
            try:
                path = (folder / value).resolve()
                if not Path(value).is_absolute() and path.is_file() and path.is_relative_to(root):
                    found.add(path.relative_to(root).as_posix())
            except (OSError, ValueError):  # a setting that is no path (too long, a NUL byte)
                continue
    return sorted(found)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _check_size(package: Package, zipped: int) -> None:
    limit = size_limit()
    if zipped < limit:
        return
    sizes: dict[str, int] = {}
    for f in package.files:
        top = Path(f).parts[0]
        sizes[top] = sizes.get(top, 0) + (package.root / f).stat().st_size
    biggest = ", ".join(f"{name} ({_size(n)})" for name, n in sorted(sizes.items(), key=lambda kv: -kv[1])[:3])
    raise ClusterError(f"the project folder {package.root} zips to {_size(zipped)}, over Ray's upload limit of "
                       f"{_size(limit)}; biggest: {biggest}. Move large data out of dl_ray/ and jobs/ (read it "
                       "from shared storage or a bucket)")


def _size(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB" if n >= 1024**2 else f"{n / 1024:.1f} KiB"
