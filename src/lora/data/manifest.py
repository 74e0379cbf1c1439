"""Held-out manifests: JSONL rows pointing at real 16 kHz WAV files written beside the manifest.

Once written, a manifest never needs the network or FFmpeg again: ``audio`` is a path relative
to the manifest, and each row records ``duration`` and ``rms`` so a verifier can check that
what decodes later is what was written.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from lora.data import audio as A
from lora.data.sources import Utterance
from lora.storage.atomic import write_jsonl


def audio_dir_for(manifest: Path) -> Path:
    return manifest.with_name(manifest.stem + "_audio")


def write_manifest(path: str | Path, utts: Iterable[Utterance], text_of=lambda u: u.text) -> list[dict]:
    """Write WAVs to ``<stem>_audio/`` and the JSONL (atomically, last); returns the rows."""
    path = Path(path)
    folder = audio_dir_for(path)
    rows = []
    for u in utts:
        wav = folder / f"{u.id}.wav"
        A.write_wav(wav, u.audio)
        rows.append({"id": u.id, "audio": str(wav.relative_to(path.parent)), "text": text_of(u), "speaker": u.speaker,
                     "duration": round(u.duration, 4), "rms": round(A.rms(u.audio), 6)})
    write_jsonl(path, rows)
    return rows
