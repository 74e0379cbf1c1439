"""Transcribe with Moonshine's own runtimes in a child process (:mod:`lora.runtime.worker`): moonshine-cpp
(``moonshine_cpp.MoonshineModel``) or moonshine-voice (``moonshine_voice.transcriber.Transcriber``, Moonshine's
current runtime). A library may abort the process on a graph it cannot run, and that must become an error message,
not our crash.

What each needs of the CPU (read from the wheels with objdump): moonshine-cpp 0.1.4's libmoonshine.so uses
AVX-512 instructions in its own code (``vpbroadcastq %reg``: SIGILL without ``avx512f``); moonshine-voice 0.1.5's
has no AVX instruction at all, and its bundled ONNX Runtime picks its kernels by CPU at run time, so it runs on any
x86-64 (measured on an AVX2-only EPYC). :func:`verifying_runtime` takes moonshine-cpp where it runs, else
moonshine-voice, and says why.
"""

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


RUNTIMES = ("moonshine-cpp", "moonshine-voice")  # in the order verifying_runtime() prefers them


def runtime_transcribe(folder: Path, suffix: str, architecture: str, wavs: list[Path],
                       timeout: float = 1800, runtime: str = "moonshine-cpp",
                       options: dict[str, str] | None = None) -> RuntimeResult:
    """Transcribe ``wavs`` with ``runtime`` loading ``folder``; a ModelError naming the folder if it cannot.
    ``options``: moonshine-voice's Transcriber options beside ``vad_threshold=0`` (e.g. ``max_tokens_per_second``)."""
    job = {"runtime": runtime, "folder": str(folder), "suffix": suffix, "architecture": architecture,
           "wavs": [str(w) for w in wavs], "options": options or {}}
    proc = subprocess.run([sys.executable, "-m", "lora.runtime.worker"], input=json.dumps(job), text=True,
                          capture_output=True, timeout=timeout, check=False)
    if proc.returncode == -signal.SIGILL:
        hint = illegal_instruction_hint() if runtime == "moonshine-cpp" else "this CPU lacks an instruction it uses"
        raise ModelError(f"{runtime} stopped on an illegal instruction (SIGILL) loading {folder}: {hint}")
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit code {proc.returncode}"
        raise ModelError(f"{runtime} could not run {folder} (.{suffix}, {architecture}): {why[:300]}")
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
def runtime_unavailable(runtime: str = "moonshine-cpp") -> str | None:
    """Why ``runtime`` cannot run on this machine (it loads the shipped base-en and transcribes beckett.wav), or
    None when it can. One child process per runtime and interpreter; tests use it to skip what needs a runtime."""
    from lora.model.offline import recorded_audio, shipped_base_en_dir

    try:
        runtime_transcribe(shipped_base_en_dir(), "ort", "base", recorded_audio()[:1], timeout=300, runtime=runtime)
    except ModelError as e:
        return str(e)
    return None


def verifying_runtime() -> tuple[str, dict[str, str]]:
    """(the runtime an export is verified in, {runtime that cannot run here: why}): the first of :data:`RUNTIMES`
    that runs; a ModelError naming every reason when none does."""
    why = {}
    for runtime in RUNTIMES:
        if (reason := runtime_unavailable(runtime)) is None:
            return runtime, why
        why[runtime] = reason
    raise ModelError("no Moonshine runtime runs here: " + "; ".join(f"{r}: {w}" for r, w in why.items()))


if __name__ == "__main__":  # scripts/run_offline.sh: exit 0 when a Moonshine runtime runs here, else 1 with the reason
    try:
        name, skipped = verifying_runtime()
    except ModelError as e:
        print(e)
        sys.exit(1)
    print(f"{name} runs on this machine" + "".join(f" ({r} does not: {w})" for r, w in skipped.items()))
    sys.exit(0)
