"""Transcribe with Moonshine's own C++ runtime (``moonshine_cpp.MoonshineModel``, the moonshine-cpp wheel) in
a child process (:mod:`lora.runtime.worker`): the library aborts the process on a graph it cannot run, and that
must become an error message, not our crash."""

from __future__ import annotations

import functools
import json
import signal
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
    if proc.returncode == -signal.SIGILL:
        raise ModelError(f"moonshine-cpp stopped on an illegal instruction (SIGILL) loading {folder}: "
                         f"{illegal_instruction_hint()}")
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit code {proc.returncode}"
        raise ModelError(f"moonshine-cpp could not run {folder} (.{suffix}, {architecture}): {why[:300]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return RuntimeResult(data["texts"], data["seconds"], data["load_seconds"], data["loaded_rss"], data["peak_rss"])


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), set())


def illegal_instruction_hint() -> str:
    """Why moonshine-cpp dies with SIGILL: its wheel's libmoonshine.so (0.1.4) uses AVX-512 instructions (seen in
    gdb: ``vpbroadcastq %rax,%xmm0`` in ``moonshine_load_model``), which CPUs without ``avx512f`` lack."""
    lacks = "avx512f" not in cpu_flags()
    return ("the moonshine-cpp wheel's libmoonshine.so uses AVX-512 instructions"
            + (", which this CPU lacks" if lacks else "") + "; the model files are not at fault: run this on a CPU "
            "with AVX-512, or with a moonshine-cpp built for this one (docs/errors.md)")


@functools.cache
def runtime_unavailable() -> str | None:
    """Why moonshine-cpp cannot run on this machine (it loads its own shipped base-en and transcribes beckett.wav), or
    None when it can. One child process per interpreter; tests use it to skip what needs the runtime."""
    from lora.model.offline import recorded_audio, shipped_base_en_dir

    try:
        runtime_transcribe(shipped_base_en_dir(), "ort", "base", recorded_audio()[:1], timeout=300)
    except ModelError as e:
        return str(e)
    return None


if __name__ == "__main__":  # scripts/run_offline.sh: exit 0 when moonshine-cpp runs here, else 1 with the reason
    why = runtime_unavailable()
    print(why or "moonshine-cpp runs on this machine")
    sys.exit(1 if why else 0)
