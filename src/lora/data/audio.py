"""Decode audio to float32 mono 16 kHz, and refuse audio that is not speech-shaped.

Backends: ``soundfile`` (libsndfile: WAV, FLAC, OGG, ...) first; the ``ffmpeg`` binary only for
formats libsndfile cannot read (MP3, M4A, ...). Headerless telephone formats go straight to ffmpeg,
told the format with ``-f``, since nothing in the file says what it is: ``.g722`` (raw G.722, 16 kHz
wideband), ``.gsm`` (GSM 06.10, 8 kHz), ``.ulaw`` / ``.alaw`` (G.711, 8 kHz), the formats Asterisk
stores its prompts in; ffmpeg decodes them at their own rate. The backend used is logged at debug level.
Resampling uses ``soxr`` (high quality, deterministic), for every file. Stereo is averaged to mono.
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np

from lora.errors import DataError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
# RMS below 1e-3 (-60 dBFS) is treated as silence: quieter than a quiet room recorded at
# normal gain; every real clip we met (LibriSpeech, espeak-ng, beckett.wav) is above 1e-2.
SILENCE_RMS = 1e-3
MIN_SECONDS = 0.1  # Moonshine's own lower limit for one transcription call
# Headerless formats: suffix -> (ffmpeg's input options for it, its sample rate). No decoder can guess these from
# the bytes; the G.711 demuxers also need the rate (they assume 44.1 kHz), the codec demuxers refuse one.
RAW_FORMATS = {".g722": (("-f", "g722"), 16_000), ".gsm": (("-f", "gsm"), 8_000),
               ".ulaw": (("-f", "mulaw", "-ar", "8000"), 8_000), ".alaw": (("-f", "alaw", "-ar", "8000"), 8_000)}
FFMPEG_HINT = "install ffmpeg (apt-get install ffmpeg / brew install ffmpeg)"


def to_mono_16k(audio: np.ndarray, sample_rate: int, name: str = "audio") -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1, dtype=np.float32)
    elif audio.ndim != 1:
        raise DataError(f"{name}: expected mono or multi-channel audio, got an array of shape {audio.shape}")
    if sample_rate <= 0:
        raise DataError(f"{name}: invalid sample rate {sample_rate}")
    if sample_rate != SAMPLE_RATE and audio.size:
        import soxr

        audio = soxr.resample(audio, sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return audio


def _decode_ffmpeg(path: Path, raw: tuple[str, ...] = (), rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode with the ffmpeg binary to mono ``rate`` Hz; ``raw``: the input options of a headerless file."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        if raw:
            raise DataError(f"{path}: raw {raw[1]} audio is decoded with ffmpeg and no ffmpeg binary was found; "
                            f"{FFMPEG_HINT}")
        raise DataError(f"{path}: format not readable by soundfile and no ffmpeg binary found; {FFMPEG_HINT} "
                        "or convert to WAV/FLAC")
    cmd = [ffmpeg, "-nostdin", "-v", "error", *raw, "-i", str(path), "-f", "f32le", "-ac", "1", "-ar", str(rate), "-"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise DataError(f"{path}: cannot decode audio (ffmpeg: {msg[-1] if msg else 'failed'})")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy()


def decode_bytes(data: bytes, name: str) -> np.ndarray:
    """Decode an in-memory encoded file (a datasets ``Audio(decode=False)`` cell)."""
    import soundfile as sf

    try:
        audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    except Exception as exc:
        raise DataError(f"{name}: cannot decode audio bytes with soundfile ({exc})") from exc
    log.debug("decoded %s with soundfile", name)
    return to_mono_16k(audio, sr, name)


def decode_file(path: str | Path) -> np.ndarray:
    """Read ``path`` as float32 mono 16 kHz; DataError naming the file if that is impossible."""
    import soundfile as sf

    path = Path(path)
    try:
        exists = path.is_file()
    except (OSError, ValueError) as exc:  # embedded NUL, name too long, ...
        raise DataError(f"invalid audio path {str(path)[:200]!r} ({exc})") from None
    if not exists:
        raise DataError(f"audio file not found: {path}")
    if path.suffix.lower() in RAW_FORMATS:
        raw, rate = RAW_FORMATS[path.suffix.lower()]
        log.debug("decoding %s with ffmpeg %s (%d Hz)", path, " ".join(raw), rate)
        return to_mono_16k(_decode_ffmpeg(path, raw, rate), rate, str(path))
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=False)
        log.debug("decoded %s with soundfile (%d Hz)", path, sr)
    except sf.LibsndfileError as exc:
        if "Format not recognised" not in str(exc) and "unknown format" not in str(exc).lower():
            raise DataError(f"{path}: corrupt or unreadable audio ({exc})") from exc
        audio, sr = _decode_ffmpeg(path), SAMPLE_RATE
        log.debug("decoded %s with ffmpeg", path)
    except Exception as exc:  # soundfile raises RuntimeError/ValueError on truncated headers
        raise DataError(f"{path}: corrupt or unreadable audio ({exc})") from exc
    return to_mono_16k(audio, sr, str(path))


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0


def problem(audio: np.ndarray, text: str) -> str | None:
    """Why this utterance cannot be used for training or evaluation, or None if it can."""
    if not text or not text.strip():
        return "empty transcript"
    if audio.size == 0:
        return "empty audio"
    if not np.all(np.isfinite(audio)):
        return "non-finite samples"
    if audio.size < MIN_SECONDS * SAMPLE_RATE:
        return f"shorter than {MIN_SECONDS} s"
    if rms(audio) < SILENCE_RMS:
        return f"silent (RMS {rms(audio):.1e} < {SILENCE_RMS:.0e})"
    if float(np.ptp(audio)) == 0.0:
        return "constant signal"
    return None


def write_wav(path: str | Path, audio: np.ndarray) -> None:
    """Write 16 kHz PCM-16 WAV atomically (temp name, then rename).

    Encoded in memory first: libsndfile reports a full disk as "System error." with no errno,
    while a plain file write names it (see :mod:`lora.storage.atomic`).
    """
    import soundfile as sf

    from lora.storage.atomic import write_bytes

    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    write_bytes(path, buf.getvalue(), what="audio")
