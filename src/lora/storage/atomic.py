"""Atomic writes: every artifact goes to a temporary name in the same folder, then is renamed.

A reader therefore sees either the old file or the complete new one, never half of one.
Directories (adapters, processors, checkpoints) use the same idea: build in ``.tmp-*``, rename.

Files and folders get the modes any other tool's output gets under the user's umask (0644 and
0755 under umask 022), not the 0600/0700 of the temporary names they were built under.

A write that fails for a reason the user can fix (no space, quota, read-only file system,
permission) becomes a one-line :class:`StorageError` naming the path, what was being written
and the fix, whichever library raised it (safetensors reports ``os error 28`` in a string).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lora.errors import LoraError, StorageError, storage_error  # noqa: F401  (StorageError: re-exported)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once, in the importing (main) thread: os.umask is process-wide
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


@contextlib.contextmanager
def writing(path: str | Path, what: str) -> Iterator[None]:
    """Turn a storage failure inside the block into a :class:`StorageError` about ``path``."""
    try:
        yield
    except LoraError:
        raise
    except Exception as exc:
        err = storage_error(exc, path, what)
        if err is None:
            raise
        raise err from None


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, read in 1 MiB blocks (checkpoints and exported graphs are tens of MB)."""
    import hashlib

    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_bytes(path: str | Path, data: bytes, what: str | None = None) -> Path:
    path = Path(path)
    with writing(path, what or path.name):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), FILE_MODE)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    return path


def write_text(path: str | Path, text: str, what: str | None = None) -> Path:
    return write_bytes(path, text.encode("utf-8"), what)


def write_json(path: str | Path, obj: Any, what: str | None = None) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n", what)


def write_jsonl(path: str | Path, rows: Iterable[dict], what: str | None = None) -> Path:
    return write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), what)


@contextlib.contextmanager
def atomic_dir(path: str | Path, force: bool = False, what: str | None = None) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``path`` in one rename.

    ``force`` allows replacing an existing non-empty directory; without it the caller is
    expected to have refused already (this only guards against races). Everything written
    inside is made readable under the umask before the rename.
    """
    path = Path(path)
    with writing(path, what or path.name):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}.", dir=path.parent))
        try:
            yield tmp
            _share(tmp)
            if path.exists():
                if not force and any(path.iterdir()):
                    raise FileExistsError(path)
                old = path.with_name(f".old-{path.name}.{os.getpid()}")
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def _share(folder: Path) -> None:
    """umask modes for ``folder`` and everything in it (libraries write some files 0600)."""
    folder.chmod(DIR_MODE)
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            os.chmod(os.path.join(root, d), DIR_MODE)
        for f in files:
            os.chmod(os.path.join(root, f), FILE_MODE)
