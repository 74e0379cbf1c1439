"""One writer per output folder.

A run (and every command that writes into a run folder: ``verify_run``, ``export_onnx --run``)
holds an OS-level lock on ``<folder>/.lock`` (``filelock``: ``flock`` on Unix, ``LockFileEx`` on
Windows) for as long as it writes. The operating system drops the lock when the process ends,
however it ends, so a killed run never leaves a stale lock that blocks ``--resume``. Who holds
it (pid, host, start time, command) is written beside it in ``.lock.owner.json``, so the
second process can say whom it is waiting for.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from lora.errors import LoraError

LOCK = ".lock"
OWNER = ".lock.owner.json"
LOCK_FILES = (LOCK, OWNER)


class FolderInUse(LoraError):
    """Another process is writing the folder."""


def _owner(folder: Path) -> str:
    try:
        o = json.loads((folder / OWNER).read_text(encoding="utf-8"))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(o["started"]))
        return f"pid {o['pid']} on {o['host']} since {since}: {o['command']}"
    except (OSError, ValueError, KeyError):
        return "another process"


class FolderLock:
    """``with FolderLock(folder, "--output-dir"):`` or FolderInUse naming the holder.

    Creates the folder if needed; a folder it created and that holds nothing but the lock when
    the block ends (a run refused for bad input, say) is removed again.
    """

    def __init__(self, folder: str | Path, flag: str = "--output-dir"):
        self.folder, self.flag = Path(folder), flag
        self._lock = None

    def __enter__(self) -> FolderLock:
        from filelock import FileLock, Timeout

        from lora.atomic import write_json, writing

        self._created = not self.folder.exists()
        with writing(self.folder, "the run's lock file"):
            self.folder.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(self.folder / LOCK), mode=0o644)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                raise FolderInUse(f"{self.flag} {self.folder} is in use by {_owner(self.folder)}; wait for it to "
                                  "finish or choose another folder") from None
        self._lock = lock
        write_json(self.folder / OWNER, {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                                         "command": " ".join(sys.argv)[:300]}, what="the run's lock owner")
        return self

    def __exit__(self, *exc) -> None:
        (self.folder / OWNER).unlink(missing_ok=True)
        self._lock.release()
        if self._created and self.folder.is_dir() and {p.name for p in self.folder.iterdir()} <= set(LOCK_FILES):
            for name in LOCK_FILES:
                (self.folder / name).unlink(missing_ok=True)
            self.folder.rmdir()


def writer_of(folder: str | Path) -> str | None:
    """Who is writing ``folder`` right now (None if nobody): for readers that need a finished folder."""
    from filelock import FileLock, Timeout

    folder = Path(folder)
    if not (folder / LOCK).is_file():
        return None
    lock = FileLock(str(folder / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return _owner(folder)
    except OSError:  # a folder we cannot lock (read-only, say) is not being written by a run of ours
        return None
    lock.release()
    return None
