"""The project folder a job carries to the cluster (Ray's ``runtime_env.working_dir``).

We build the zip ourselves, so that nothing private leaves the laptop (secrets,
``.git``, run folders, W&B files, data caches are never packed), the job file can
travel with the code even when it lives outside the project, and a folder too
big for Ray (100 MiB zipped: the dashboard's request limit) is refused *before*
anything is uploaded, with the biggest culprits named. Ray takes a local ``.zip`` as ``working_dir`` and content-addresses it:
the same files are uploaded once.
"""
from __future__ import annotations

import fnmatch
import os
import subprocess
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from dl_ray.cluster import ClusterError

# Never packed, at any depth: caches, environments, run outputs, VCS data, and anything that may hold a secret.
EXCLUDED = (
    ".git", ".venv", "venv", "__pycache__", "*.egg-info", ".pytest_cache", ".hypothesis", ".mypy_cache",
    ".ruff_cache", "build", "dist", ".gpu-bundle",                                   # tooling
    "runs", "wandb", "ray_results", "*.ckpt",                                        # run outputs
    ".cache", "*_cache", "cache",                                                    # data caches
    ".env", ".env.*", "*.pem", "*.key", "*.p12", ".netrc", ".ssh", ".aws", ".ray",   # secrets
    "auth_token", "id_rsa*", "id_ed25519*", "*credentials*", "*secret*", ".git-credentials",
)
JOB_FOLDER = "_dl_ray_job"  # where a job file from outside the project is put inside the package
HTTP_LIMIT = 100 * 1024**2  # the largest request Ray's dashboard accepts (ray_constants.DASHBOARD_CLIENT_MAX_SIZE)
GCS_LIMIT = 512 * 1024**2  # the largest package Ray's GCS stores: one gRPC message (RAY_max_grpc_message_size)


def size_limit() -> int:
    """The largest zipped working_dir Ray's Jobs API takes in."""
    return min(HTTP_LIMIT, int(os.environ.get("RAY_max_grpc_message_size", GCS_LIMIT)))


def project_root() -> Path:
    """The folder holding this package's ``pyproject.toml`` (a checkout, installed with ``pip install -e .``)."""
    import dl_ray

    root = Path(dl_ray.__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise ClusterError(f"dl_ray is installed without its project folder ({root}); install the checkout with "
                           "`pip install -e .` so jobs can carry the code to the cluster")
    return root


def excluded(relative: str) -> bool:
    return any(fnmatch.fnmatch(part, pattern) for part in Path(relative).parts for pattern in EXCLUDED)


@dataclass
class Package:
    root: Path
    files: list[str] = field(default_factory=list)
    """Paths relative to ``root``."""
    job_entry: str = ""
    """The job file's path inside the package (what the entrypoint is given)."""
    extra: dict[str, Path] = field(default_factory=dict)
    """Package path -> local file, for files from outside ``root``."""

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


def collect(job_file: Path, root: Path | None = None) -> Package:
    """What goes to the cluster: the project's files (minus :data:`EXCLUDED` and .gitignore'd ones) and the job file."""
    root = root or project_root()
    files = sorted(f for f in _candidate_files(root) if not excluded(f) and (root / f).is_file())
    package = Package(root, files)
    job_file = job_file.resolve()
    if job_file.is_relative_to(root) and not excluded(str(job_file.relative_to(root))):
        package.job_entry = job_file.relative_to(root).as_posix()
        if package.job_entry not in files:
            package.files.append(package.job_entry)
    else:
        package.job_entry = f"{JOB_FOLDER}/{job_file.name}"
        package.extra[package.job_entry] = job_file
    return package


def _candidate_files(root: Path) -> list[str]:
    """Every file under ``root`` outside :data:`EXCLUDED` dirs, minus what ``.gitignore`` ignores (in a git checkout).

    The tree is walked rather than read from git's index, which other processes may be rewriting."""
    found = []
    for folder, dirs, names in os.walk(root):
        rel = Path(folder).relative_to(root)
        dirs[:] = sorted(d for d in dirs if not excluded(str(rel / d)))
        found += [(rel / n).as_posix() for n in names]
    if (root / ".git").exists() and found:
        check = subprocess.run(["git", "check-ignore", "--no-index", "--stdin", "-z"], cwd=root, capture_output=True,
                               input="\0".join(found).encode(), check=False)
        if check.returncode in (0, 1):  # 1: nothing ignored
            ignored = set(check.stdout.decode().split("\0"))
            found = [f for f in found if f not in ignored]
    return sorted(found)


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
                       f"{_size(limit)}; biggest: {biggest}. Move large data out of the project (read it from shared "
                       "storage or a bucket), or add it to .gitignore")


def _size(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB" if n >= 1024**2 else f"{n / 1024:.1f} KiB"
