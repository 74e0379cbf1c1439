"""Child process for :func:`lora.runtime.moonshine_cpp.runtime_transcribe`: one of Moonshine's runtimes
(moonshine-cpp, or moonshine-voice, Moonshine's current one) on a list of WAV files.

Reads ``{"runtime", "folder", "suffix", "architecture", "wavs"}`` as JSON on stdin; prints one JSON line
``{"texts", "seconds", "load_seconds", "loaded_rss", "peak_rss"}``. The first clip is transcribed once untimed
(warm-up), so ``seconds`` measures steady-state decoding, as a device app would see it.

moonshine-voice runs its voice-activity detector first and decodes each stretch of speech as a line; here its
threshold is 0, so a clip is decoded whole, as PyTorch and moonshine-cpp decode it: the verification compares the
model, and on clips without speech it is the model, not the detector, that must write nothing.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import psutil


def _moonshine_cpp(job: dict):
    import moonshine_cpp

    model = moonshine_cpp.MoonshineModel(model_dir_path=job["folder"], onnx_suffix=job["suffix"],
                                         model_type=job["architecture"])
    return lambda wav: model.transcribe_wav(wav)


def _moonshine_voice(job: dict):
    import soundfile as sf
    from moonshine_voice import ModelArch
    from moonshine_voice.transcriber import Transcriber

    if job["suffix"] != "ort":
        raise SystemExit(f"moonshine-voice loads .ort graphs only, not .{job['suffix']}")
    model = Transcriber(job["folder"], ModelArch[job["architecture"].upper()],
                        options={"vad_threshold": "0", **job.get("options", {})})

    def transcribe(wav: str) -> str:
        audio, rate = sf.read(wav, dtype="float32")
        return " ".join(line.text.strip() for line in model.transcribe_without_streaming(audio.tolist(), rate).lines)

    return transcribe


def main() -> int:
    job = json.loads(sys.stdin.read())
    runtime = job.get("runtime", "moonshine-cpp")
    try:
        load_model = {"moonshine-cpp": _moonshine_cpp, "moonshine-voice": _moonshine_voice}[runtime]
        t0 = time.perf_counter()
        transcribe = load_model(job)
    except ImportError:
        print(f"the {runtime} wheel is not installed: pip install 'moonshine-lora[offline]'", file=sys.stderr)
        return 2
    load = time.perf_counter() - t0
    loaded_rss = psutil.Process().memory_info().rss
    wavs = job["wavs"]
    if wavs:
        transcribe(wavs[0])
    texts, seconds = [], []
    for wav in wavs:
        t0 = time.perf_counter()
        texts.append(transcribe(wav).strip())
        seconds.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    print(json.dumps({"texts": texts, "seconds": seconds, "load_seconds": load, "loaded_rss": loaded_rss,
                      "peak_rss": peak}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
