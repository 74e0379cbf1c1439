"""One writer per output folder.

A run (and every command that writes into a run folder: ``verify_run``, ``export_onnx --run``)
holds an OS-level lock on ``<folder>/.lock`` (``filelock``: ``flock`` on Unix, ``LockFileEx`` on
Windows) for as long as it writes. The operating system drops the lock when the process ends,
however it ends, so a killed run never leaves a stale lock that blocks ``--resume``. Who holds
it (pid, host, start time, command) is written beside it in ``.lock.owner.json``, so the
second process can say whom it is waiting for.

A file system without ``flock`` (an NFS home without a lock service, some shared mounts) is refused
in one line naming the folder: filelock's own fallback there (a lock *file*) would be left behind by a
killed run and block ``--resume``. ``MOONSHINE_LORA_NO_LOCK=1`` runs without the lock on such a
folder, knowingly: nothing then stops a second run writing the same folder.
"""

from __future__ import annotations

import errno
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


NO_LOCK = "MOONSHINE_LORA_NO_LOCK"
_NO_FLOCK = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP}  # what flock says on a file system that cannot lock


class FolderInUse(LoraError):
    """Another process is writing the folder."""


def _os_lock(path: Path, **kw):
    from filelock import FileLock

    return FileLock(str(path), fallback_to_soft=False, **kw)  # never a lock file that a killed run leaves behind


def _unlocked() -> bool:
    return os.environ.get(NO_LOCK, "").strip().lower() in ("1", "true", "yes", "on")


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
        from filelock import Timeout

        from lora.storage.atomic import write_json, writing

        self._created = not self.folder.exists()
        with writing(self.folder, "the run's lock file"):
            self.folder.mkdir(parents=True, exist_ok=True)
            if _unlocked():
                print(f"warning: {NO_LOCK} is set: {self.folder} is not locked; nothing stops a second run writing it",
                      flush=True)
                return self
            lock = _os_lock(self.folder / LOCK, mode=0o644)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                raise FolderInUse(f"{self.flag} {self.folder} is in use by {_owner(self.folder)}; wait for it to "
                                  "finish or choose another folder") from None
            except OSError as exc:
                if exc.errno not in _NO_FLOCK:
                    raise
                self.__exit__()  # a folder made for this run goes again
                raise LoraError(f"{self.flag} {self.folder}: its file system cannot lock files (flock: "
                                f"{os.strerror(exc.errno)}; NFS without a lock service and some shared mounts do "
                                f"that); use a folder on a local disk, or set {NO_LOCK}=1 to go without the lock "
                                "(then nothing stops a second run writing the same folder)") from None
        self._lock = lock
        write_json(self.folder / OWNER, {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                                         "command": " ".join(sys.argv)[:300]}, what="the run's lock owner")
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            (self.folder / OWNER).unlink(missing_ok=True)
            self._lock.release()
        if self._created and self.folder.is_dir() and {p.name for p in self.folder.iterdir()} <= set(LOCK_FILES):
            for name in LOCK_FILES:
                (self.folder / name).unlink(missing_ok=True)
            self.folder.rmdir()


def writer_of(folder: str | Path) -> str | None:
    """Who is writing ``folder`` right now (None if nobody): for readers that need a finished folder."""
    from filelock import Timeout

    folder = Path(folder)
    if _unlocked() or not (folder / LOCK).is_file():
        return None
    lock = _os_lock(folder / LOCK)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return _owner(folder)
    except OSError:  # a folder we cannot lock (read-only, no flock) is not being written by a run of ours
        return None
    lock.release()
    return None
