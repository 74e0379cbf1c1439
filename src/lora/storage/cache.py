"""Where the toolkit keeps what it makes or fetches once (imported model, synthesized corpora, the audio store),
and whether the Hugging Face hub can fill it right now."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("MOONSHINE_LORA_CACHE", Path.home() / ".cache" / "moonshine-lora"))


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
