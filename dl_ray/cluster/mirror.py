"""Run a command whose run folder lives in a bucket: ``python -m dl_ray.cluster.mirror URI SCRATCH RUN -- CMD...``.

``dl-ray submit`` wraps a job whose ``storage.path`` is an ``s3://`` / ``gs://`` URI in this:
it copies ``URI/RUN`` (an earlier attempt: the run resumes) into ``SCRATCH/RUN``, runs
``CMD`` (given ``--set storage.path=SCRATCH``), copies new and changed files back to the
bucket every ``DL_RAY_MIRROR_EVERY_S`` seconds (30) and once more when ``CMD`` ends, and
exits with ``CMD``'s exit code. A stop (SIGTERM / SIGINT) is passed on to ``CMD``.
Buckets are reached through ``pyarrow.fs`` (the same layer Ray Train uses), with the
node's usual cloud credentials.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path


class Mirror:
    """Copies new or changed files of ``local`` to ``uri`` (and ``uri`` to ``local`` once, to resume)."""

    def __init__(self, uri: str, local: Path):
        from pyarrow import fs

        self.fs, self.remote = fs.FileSystem.from_uri(uri)
        self.local = local
        self.sent: dict[str, tuple[int, int]] = {}

    def pull(self) -> int:
        from pyarrow import fs

        if self.fs.get_file_info(self.remote).type != fs.FileType.Directory:
            return 0
        self.local.mkdir(parents=True, exist_ok=True)
        fs.copy_files(self.remote, str(self.local), source_filesystem=self.fs, destination_filesystem=fs.LocalFileSystem())
        self.sent = self._changed()  # what came from the bucket need not go back
        return len(self.sent)

    def push(self) -> int:
        changed = self._changed()
        for name in changed:
            target = f"{self.remote}/{name}"
            self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            with self.fs.open_output_stream(target) as out:
                out.write((self.local / name).read_bytes())
        self.sent.update(changed)
        return len(changed)

    def _changed(self) -> dict[str, tuple[int, int]]:
        found = {}
        for path in self.local.rglob("*") if self.local.is_dir() else []:
            if path.is_file() and not path.name.endswith(".tmp"):
                stat = path.stat()
                name = path.relative_to(self.local).as_posix()
                if self.sent.get(name) != (stat.st_size, stat.st_mtime_ns):
                    found[name] = (stat.st_size, stat.st_mtime_ns)
        return found


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") != 3:
        print("usage: python -m dl_ray.cluster.mirror URI SCRATCH RUN -- CMD...", file=sys.stderr)
        return 2
    uri, scratch, run = argv[:3]
    command = argv[4:]
    mirror = Mirror(f"{uri.rstrip('/')}/{run}", Path(scratch) / run)
    print(f"[dl-ray mirror] {mirror.pull()} file(s) from {uri}/{run}; run folder on this node: {mirror.local}", flush=True)
    child = subprocess.Popen(command)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    every = float(os.environ.get("DL_RAY_MIRROR_EVERY_S", "30"))
    stop = threading.Event()

    def keep_pushing():
        while not stop.wait(every):
            mirror.push()

    pusher = threading.Thread(target=keep_pushing, name="dl-ray-mirror", daemon=True)
    pusher.start()
    code = child.wait()
    stop.set()
    pusher.join()
    print(f"[dl-ray mirror] {mirror.push()} file(s) copied to {uri}/{run}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
