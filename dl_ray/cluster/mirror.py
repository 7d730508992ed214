"""A run folder kept in a bucket (``s3://`` / ``gs://``), through ``pyarrow.fs`` as Ray Train does.

A ``dl-ray train`` job sent to a bucket (``dl-ray submit`` sets ``DL_RAY_STORAGE_URI``) splits the work:

* Ray Train writes its checkpoints straight into the bucket (``RunConfig(storage_path=URI)``), prunes
  them there, and a rerun of the same run restores from them (Ray's checkpoint-manager snapshot);
* the files we write ourselves (``spec.yaml``, ``metrics.csv``, ``summary.json``, plots) are written
  to the same run folder on the writer's node (``storage.scratch_for``: the same path on every node)
  and sent by :class:`Mirror` whenever the writer has written them: by rank 0 after each epoch and at
  the end, by the driver at the end. A writer deletes in the bucket only what it sent and then removed
  (a pruned local-mode checkpoint), never another writer's files.

A ``dl-ray tune`` job does the same per trial: Tune keeps its experiment state and the trials' checkpoints in the
bucket (``RunConfig(storage_path=URI)``), each trial mirrors its own run folder from the node it runs on (into
that node's scratch folder), and the sweep's driver mirrors the sweep's own files (``results.csv``,
``summary.json``, plots), reading the trials' results from the bucket, never from another node's disk.

``dl-ray dqn`` writes its run folder from its driver alone (actors and the learner return what it writes), so it
is wrapped whole: ``python -m dl_ray.cluster.mirror URI SCRATCH RUN -- CMD...`` makes ``SCRATCH/RUN`` the copy of
``URI/RUN``, runs ``CMD``, pushes every ``DL_RAY_MIRROR_EVERY_S`` seconds (30) and once more when ``CMD``
ends, and exits with ``CMD``'s code (1 when the last push fails). Files are streamed, never read whole into memory.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from dl_ray.cluster import signals

STORAGE_ENV = "DL_RAY_STORAGE_URI"  # the bucket a submitted train / tune job's storage.path stands for
SKIPPED = (".tmp",)  # half-written files (History, persist_local's .tmp_ folders) are never sent
_by_folder: dict[Path, Mirror] = {}
CHECKPOINTS = "checkpoint_epoch_"  # dl_ray.train.checkpoints.dir_name
SENT = (-1, -1)  # a bucket file this mirror wrote: its next listing is its own write, not a change
RAYS = ("checkpoint_manager_snapshot.json", ".validate_storage_marker")  # Ray Train's own files in a run folder


class Mirror:
    """Keeps ``local`` and the bucket folder ``uri`` in step, as one writer sees them.

    ``synced``: each local file's (size, mtime) when it last matched the bucket; ``seen``: each bucket file's
    (size, mtime) when this mirror last listed it (``SENT`` after sending it). A local file whose stat
    differs from ``synced`` was written here and is sent; a synced file gone here was deleted here and is
    deleted there; one gone there was pruned there (by Ray) and is deleted here; one changed there (another
    writer: rank 0 on another node) is fetched unless the local copy is newer.

    ``checkpoints=False``: a mirror that never lists a checkpoint folder, at any depth (a sweep's driver: it reads
    the trials' results, and Tune restores their checkpoints from the bucket itself)."""

    def __init__(self, uri: str, local: Path, checkpoints: bool = True):
        from pyarrow import fs

        self.uri, self.local, self.checkpoints = uri.rstrip("/"), Path(local), checkpoints
        self.fs, self.remote = fs.FileSystem.from_uri(self.uri)
        self.synced: dict[str, tuple[int, int] | None] = {}
        self.seen: dict[str, tuple[int, int]] = {}

    def pull(self, prefix: str = "") -> int:
        """Bring new or changed bucket files here, drop local copies of files deleted there; returns files copied.
        ``prefix``: only the files whose names start with it (a worker that reads the checkpoints and nothing else)."""
        remote = {name: stat for name, stat in self._remote_files().items() if name.startswith(prefix)}
        for name in [n for n in self.seen if n not in remote]:
            if self.synced.get(name) == _stat(self.local / name):  # not rewritten here since
                _remove(self.local, name)
            self.seen.pop(name), self.synced.pop(name, None)
        copied = 0
        for name, stat in remote.items():
            path = self.local / name
            here, synced, before = _stat(path), self.synced.get(name), self.seen.get(name)
            changed_there = before is None or before not in (SENT, stat)
            if here is None:
                fetch = name not in self.synced  # else deleted here: the next push deletes it there
            elif name not in self.synced and here[0] == stat[0] and here[1] >= stat[1]:
                fetch, self.synced[name] = False, here  # fetched already by another process of this node
            else:
                fetch = changed_there and (synced == here or here[1] < stat[1])  # a newer local copy wins
            if fetch:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._copy(f"{self.remote}/{name}", str(path), download=True)
                self.synced[name], copied = _stat(path), copied + 1
            self.seen[name] = stat
        return copied

    def reset(self) -> int:
        """Delete the local files the bucket does not hold (every file, whatever this mirror lists); returns how many.

        The bucket is the run's record and the scratch folder only a copy: files an earlier run left on this node
        (its bucket folder since deleted, a last push that never happened) must not make a rerun here resume from
        what a rerun on any other node would not see. Only for the process that starts the run, before any other
        writer of it runs."""
        stale = self._local_files(every=True).keys() - self._remote_files(every=True).keys()
        for name in stale:
            _remove(self.local, name)
        return len(stale)

    def push(self, checkpoints: bool = True) -> int:
        """Send files written here since the last sync, delete there what was deleted here; returns files sent.

        Ray Train's own files (its checkpoint-manager snapshot) are never sent, nor with ``checkpoints=False`` the
        checkpoint folders (Ray Train writes and prunes them in the bucket): the copy here may be stale, fetched again
        by another process of this node after Ray replaced or pruned it there, and sending it back would make a rerun
        restore a pruned checkpoint."""
        def ours(name: str) -> bool:
            return name not in RAYS and (checkpoints or not name.startswith(CHECKPOINTS))

        here = {n: stat for n, stat in self._local_files().items() if ours(n)}
        here |= {n: stat for n, stat in self.synced.items() if not ours(n)}
        gone = [name for name in self.synced if name not in here]
        pruned = {n.split("/", 1)[0] for n in gone if "/" in n and not (self.local / n.split("/", 1)[0]).exists()}
        for folder in sorted(pruned):
            self._delete(f"{self.remote}/{folder}", folder=True)  # a pruned checkpoint: no empty marker left behind
        for name in gone:
            if name.split("/", 1)[0] not in pruned:
                self._delete(f"{self.remote}/{name}", folder=False)
            self.synced.pop(name), self.seen.pop(name, None)
        changed = {name: stat for name, stat in here.items() if self.synced.get(name) != stat}
        for name, stat in changed.items():
            self._copy(str(self.local / name), f"{self.remote}/{name}", download=False)
            self.synced[name], self.seen[name] = stat, SENT
        return len(changed)

    def _local_files(self, every: bool = False) -> dict[str, tuple[int, int]]:
        """Files here by name: those this mirror lists, or ``every`` one."""
        found = {}
        for path in self.local.rglob("*") if self.local.is_dir() else []:
            name = path.relative_to(self.local).as_posix()
            if path.is_file() and (every or self._listed(name)):
                found[name] = _stat(path)
        return found

    def _listed(self, name: str) -> bool:
        parts = name.split("/")
        return (not any(part.endswith(SKIPPED) or part.startswith(".tmp") for part in parts)
                and (self.checkpoints or not any(part.startswith("checkpoint_") for part in parts[:-1])))

    def _remote_files(self, every: bool = False) -> dict[str, tuple[int, int]]:
        """Files in the bucket folder by name: all of them for a mirror of checkpoints too, or ``every`` one."""
        from pyarrow import fs

        infos = self.fs.get_file_info(fs.FileSelector(self.remote, recursive=True, allow_not_found=True))
        files = {i.path[len(self.remote) + 1:]: (i.size, i.mtime_ns or 0) for i in infos if i.type == fs.FileType.File}
        return {name: stat for name, stat in files.items() if every or self.checkpoints or self._listed(name)}

    def _copy(self, source: str, destination: str, download: bool) -> None:
        from pyarrow import fs

        here = fs.LocalFileSystem()
        if not download:
            if self.fs.type_name == "local":  # buckets have no folders to make
                self.fs.create_dir(destination.rsplit("/", 1)[0], recursive=True)
            fs.copy_files(source, destination, source_filesystem=here, destination_filesystem=self.fs)  # streamed
            return
        partial = f"{destination}.{os.getpid()}.tmp"  # another worker on this node may read the file meanwhile
        fs.copy_files(source, partial, source_filesystem=self.fs, destination_filesystem=here)
        os.replace(partial, destination)

    def _delete(self, path: str, folder: bool) -> None:
        from pyarrow import fs

        kind = self.fs.get_file_info(path).type  # already gone: another writer's delete
        if not folder and kind == fs.FileType.File:
            self.fs.delete_file(path)
        elif folder and kind == fs.FileType.Directory:
            delete_folder(self.fs, path)


def delete_folder(filesystem, path: str) -> None:
    """Every object under ``path`` in a bucket. A bucket has no folders, only names with a prefix, and a "folder/"
    marker object may be left (S3's delete leaves one) or may never have been (GCS, where a file sent alone gets
    none, and ``delete_dir`` fails on the missing marker after deleting the rest)."""
    from pyarrow import fs

    filesystem.delete_dir_contents(path, missing_dir_ok=True)
    if filesystem.get_file_info(path).type == fs.FileType.Directory:
        filesystem.delete_dir(path)


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _remove(root: Path, name: str) -> None:
    """Delete ``root/name`` and the folders it leaves empty (a checkpoint pruned in the bucket)."""
    path = root / name
    path.unlink(missing_ok=True)
    for folder in path.parents:
        if folder == root or not folder.is_dir() or any(folder.iterdir()):
            break
        folder.rmdir()


def run_uri(run_dir: Path) -> str | None:
    """Where a run (or a sweep) of a job sent to a bucket lives: ``$DL_RAY_STORAGE_URI`` + its folder's name; None
    for a job on a filesystem."""
    root = os.environ.get(STORAGE_ENV)
    return f"{root.rstrip('/')}/{Path(run_dir).name}" if root else None


def parent_uri(uri: str) -> str:
    """The folder a run's URI is in: the ``storage_path`` Ray Train or Tune is given for it."""
    return uri.rstrip("/").rsplit("/", 1)[0]


def fetched(uri: str, field: str) -> Path:
    """A run folder (or one of its checkpoints) kept in a bucket, copied into this node's scratch folder for its
    bucket folder: the same path on every node, so each node that needs it (an evaluate sweep's driver, each of its
    trials) fetches it to where the others look. Files already here are not fetched again."""
    from dl_ray.cluster import storage  # storage imports this module
    from dl_ray.errors import SpecError

    storage.check_bucket(uri, field)  # credentials and the bucket, before a request that could wait on them
    parent, name = uri.rstrip("/").rsplit("/", 1)
    local = Path(storage.scratch_for(parent)) / name
    try:
        Mirror(uri, local).pull()
    except OSError as e:
        raise SpecError(f"{field}: cannot read {uri}: {str(e).splitlines()[0]}") from None
    if not local.is_dir():
        raise SpecError(f"{field}: {uri} holds no file (expected a run folder or a checkpoint_epoch_NNNN folder)")
    return local


def for_run(run_dir: Path, uri: str | None = None, fresh: bool = False, checkpoints: bool = True) -> Mirror | None:
    """This process's mirror of ``run_dir`` when its run lives in a bucket (``uri``, else :func:`run_uri`), pulled
    on first use; None for a run on a filesystem. ``fresh``: this process starts the run (a job's driver, a sweep
    trial): a new mirror, and the local folder made the bucket's copy first (:meth:`Mirror.reset`)."""
    from dl_ray.errors import SpecError

    run_dir = Path(run_dir)
    uri = uri or run_uri(run_dir)
    if uri is None:
        return None
    if fresh or run_dir not in _by_folder:
        try:
            mirror = Mirror(uri, run_dir, checkpoints)
            if fresh:
                mirror.reset()
            mirror.pull()
        except OSError as e:
            raise SpecError(f"storage.path: cannot read the run folder {uri}: {str(e).splitlines()[0]}") from None
        _by_folder[run_dir] = mirror
    return _by_folder[run_dir]


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") != 3:
        print("usage: python -m dl_ray.cluster.mirror URI SCRATCH RUN -- CMD...", file=sys.stderr)
        return 2
    uri, scratch, run = argv[:3]
    command = argv[4:]
    mirror = Mirror(f"{uri.rstrip('/')}/{run}", Path(scratch) / run)
    mirror.reset()
    print(f"[dl-ray mirror] {mirror.pull()} file(s) from {uri}/{run}; run folder on this node: {mirror.local}", flush=True)
    child = subprocess.Popen(command)
    with signals.handled(lambda signum, _frame: child.send_signal(signum)):
        code = _wait_pushing(mirror, child, uri, run)
    try:
        print(f"[dl-ray mirror] {mirror.push()} file(s) copied to {uri}/{run}", flush=True)
    except OSError as e:
        print(f"[dl-ray mirror] the run folder {mirror.local} could not be copied to {uri}/{run}: {e}", file=sys.stderr,
              flush=True)
        return code or 1
    return code


def _wait_pushing(mirror: Mirror, child: subprocess.Popen, uri: str, run: str) -> int:
    """Wait for the command, pushing the run folder every DL_RAY_MIRROR_EVERY_S seconds meanwhile; its exit code."""
    every = float(os.environ.get("DL_RAY_MIRROR_EVERY_S", "30"))
    stop = threading.Event()

    def keep_pushing():
        while not stop.wait(every):
            try:
                mirror.push()
            except OSError as e:  # a transient bucket error: said, and retried at the next push
                print(f"[dl-ray mirror] push to {uri}/{run} failed, retrying in {every:.0f} s: {e}", file=sys.stderr, flush=True)

    pusher = threading.Thread(target=keep_pushing, name="dl-ray-mirror", daemon=True)
    pusher.start()
    code = child.wait()
    stop.set()
    pusher.join()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
