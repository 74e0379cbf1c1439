"""The Asterisk prompts over a channel the toolkit was never developed on: a noisy landline.

Each G.722 prompt (asterisk-core-sounds-en-g722) gets pink noise at --snr dB below the clip's RMS (seeded by its
key), then goes through G.711 mu-law at 8 kHz; written as 8 kHz 16-bit WAV under OUTPUT with the prompts' keys,
ready for `lora.scripts.import_prompts --audio OUTPUT --transcripts core-sounds-en.txt` (docs/recorded.md,
"A noisy landline"). The speech is recorded; the channel is simulated here.

    .venv/bin/python examples/noisy-line/make_noisy_line.py --output data/noisy-line --snr 10
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from lora.data import audio as A
from lora.data.prompts import ASTERISK_AUDIO


def pink_noise(n: int, rng: np.random.Generator, sample_rate: int = A.SAMPLE_RATE) -> np.ndarray:
    """White noise shaped to 1/f power (flat below 20 Hz)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n, 1 / sample_rate), 20.0)
    return np.fft.irfft(spectrum / np.sqrt(freqs), n)


def mu_law_8bit(x: np.ndarray) -> np.ndarray:
    """G.711 mu-law: compand, quantize to 8 bits, expand."""
    y = np.sign(x) * np.log1p(255 * np.abs(x)) / np.log(256)
    y = np.round((y + 1) / 2 * 255) / 255 * 2 - 1
    return np.sign(y) * (256 ** np.abs(y) - 1) / 255


def noisy_line(clean: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """16 kHz speech -> 8 kHz noisy mu-law speech."""
    rng = np.random.default_rng(seed)
    noise = pink_noise(clean.size, rng)
    eps = 1e-12  # kept: the audio measured in docs/recorded.md was made with it, and it differs in 5 clips without
    x = clean + noise * (A.rms(clean) + eps) / (A.rms(noise) + eps) * 10 ** (-snr_db / 20)
    x = soxr.resample(x, A.SAMPLE_RATE, 8000)
    return mu_law_8bit(np.clip(x / max(1.0, float(np.abs(x).max())), -1, 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--snr", type=float, default=10.0, help="speech-to-noise ratio in dB (default 10)")
    p.add_argument("--audio", type=Path, default=ASTERISK_AUDIO, help="the G.722 prompts (default: installed)")
    args = p.parse_args()
    n = 0
    for path in sorted(args.audio.rglob("*.g722")):
        key = path.relative_to(args.audio).with_suffix("")
        seed = int(hashlib.sha1(key.as_posix().encode()).hexdigest()[:8], 16)
        out = args.output / key.with_suffix(".wav")
        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(out, noisy_line(A.decode_file(path).astype(np.float64), args.snr, seed).astype(np.float32), 8000,
                 subtype="PCM_16")
        n += 1
    print(f"{n} prompts over a noisy line ({args.snr:g} dB pink noise, 8 kHz mu-law) in {args.output}")


if __name__ == "__main__":
    main()
