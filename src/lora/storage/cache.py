"""Where the toolkit keeps what it makes or fetches once (imported model, synthesized corpora, the audio store),
and whether the Hugging Face hub can fill it right now."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("MOONSHINE_LORA_CACHE", Path.home() / ".cache" / "moonshine-lora"))


@contextlib.contextmanager
def filling(entry: str | Path) -> Iterator[None]:
    """Hold ``entry``'s lock while it is checked and, if missing or stale, built: two processes that need the same
    cache entry at once (two runs, a test suite's workers) build it once, and neither reads it while the other
    replaces it. The lock is the OS's (released however the process ends), on a file beside the entry."""
    from filelock import FileLock

    entry = Path(entry)
    entry.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(entry.parent / f".{entry.name}.lock")):
        yield


def hub_offline_reason() -> str | None:
    """Why the Hugging Face hub cannot be used right now (None if it looks reachable)."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var} is set"
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as exc:
        return f"cannot reach {host} ({exc.__class__.__name__})"
    return None
