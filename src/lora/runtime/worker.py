"""Child process for :func:`lora.runtime.moonshine_cpp.runtime_transcribe`: moonshine-cpp on a list of WAV files.

Reads ``{"folder", "suffix", "architecture", "wavs"}`` as JSON on stdin; prints one JSON line
``{"texts", "seconds", "load_seconds", "loaded_rss", "peak_rss"}``. The first clip is transcribed once untimed
(warm-up), so ``seconds`` measures steady-state decoding, as a device app would see it.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import psutil


def main() -> int:
    job = json.loads(sys.stdin.read())
    try:
        import moonshine_cpp
    except ImportError:
        print("the moonshine-cpp wheel is not installed: pip install 'moonshine-lora[offline]'", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    model = moonshine_cpp.MoonshineModel(model_dir_path=job["folder"], onnx_suffix=job["suffix"],
                                         model_type=job["architecture"])
    load = time.perf_counter() - t0
    loaded_rss = psutil.Process().memory_info().rss
    wavs = job["wavs"]
    if wavs:
        model.transcribe_wav(wavs[0])
    texts, seconds = [], []
    for wav in wavs:
        t0 = time.perf_counter()
        texts.append(model.transcribe_wav(wav).strip())
        seconds.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    print(json.dumps({"texts": texts, "seconds": seconds, "load_seconds": load, "loaded_rss": loaded_rss,
                      "peak_rss": peak}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
