"""Transcribe with Moonshine's own C++ runtime (``moonshine_cpp.MoonshineModel``, the moonshine-cpp wheel) in
a child process (:mod:`lora.runtime.worker`): the library aborts the process on a graph it cannot run, and that
must become an error message, not our crash."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lora.errors import ModelError


@dataclass
class RuntimeResult:
    texts: list[str]
    seconds: list[float]
    load_seconds: float
    loaded_rss: int = 0  # the child process's resident memory once the model is loaded (bytes)
    peak_rss: int = 0  # and its peak over the whole run


def runtime_transcribe(folder: Path, suffix: str, architecture: str, wavs: list[Path],
                       timeout: float = 1800) -> RuntimeResult:
    """Transcribe ``wavs`` with moonshine-cpp loading ``folder``; a ModelError naming the folder if it cannot."""
    job = {"folder": str(folder), "suffix": suffix, "architecture": architecture, "wavs": [str(w) for w in wavs]}
    proc = subprocess.run([sys.executable, "-m", "lora.runtime.worker"], input=json.dumps(job), text=True,
                          capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit code {proc.returncode}"
        raise ModelError(f"moonshine-cpp could not run {folder} (.{suffix}, {architecture}): {why[:300]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return RuntimeResult(data["texts"], data["seconds"], data["load_seconds"], data["loaded_rss"], data["peak_rss"])
