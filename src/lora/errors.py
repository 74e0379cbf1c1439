"""One error type for everything a user can get wrong, and the CLI wrapper that prints it.

A ``LoraError`` carries a one-line message that names the culprit (file, flag, split) and the
fix. CLIs run through :func:`cli_main`, which turns it into ``error: ...`` on stderr and exit
code 2 instead of a traceback wall. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


class LoraError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class DataError(LoraError):
    """Audio, text or manifest input that cannot be used."""


class ModelError(LoraError):
    """A model, processor or adapter that cannot be loaded or does not fit."""


EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143  # SIGTERM: a scheduler's preemption or scancel, torchrun stopping its ranks (128 + SIGTERM)


class RunInterrupted(LoraError):
    """A run was stopped (Ctrl-C, SIGTERM); a checkpoint was saved and the message says how to resume."""

    def __init__(self, message: str, code: int = EXIT_INTERRUPTED):
        super().__init__(message)
        self.code = code


def cli_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; print a LoraError as one line and return a non-zero exit code."""
    try:
        return int(main(argv) or 0)
    except RunInterrupted as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return exc.code
    except LoraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:  # a write outside lora.storage.atomic's helpers (disk full, read-only, permission)
        err = storage_error(exc, exc.filename or "its folder", "a file")
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


_FULL = "free some space there or choose another folder"
_LOCKED = "make it writable or choose another folder"
STORAGE_ERRNOS = {
    errno.ENOSPC: ("no space left on the device", _FULL),
    errno.EDQUOT: ("disk quota exceeded", _FULL),
    errno.EROFS: ("read-only file system", _LOCKED),
    errno.EACCES: ("permission denied", _LOCKED),
    errno.EPERM: ("operation not permitted", _LOCKED),
}
_OS_ERROR = re.compile(r"os error (\d+)|\[Errno (\d+)\]")


class StorageError(LoraError):
    """A file could not be written for a reason the user can fix (space, permissions)."""


def storage_error(exc: BaseException, path: str | Path, what: str) -> StorageError | None:
    """The user-facing error for ``exc`` if it is a storage problem, else None."""
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None:
        m = _OS_ERROR.search(str(exc))
        code = int(m.group(1) or m.group(2)) if m else None
    if code not in STORAGE_ERRNOS:
        return None
    reason, fix = STORAGE_ERRNOS[code]
    return StorageError(f"cannot write {what} to {path}: {reason}; {fix}")
