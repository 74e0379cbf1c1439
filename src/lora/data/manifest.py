"""Held-out manifests: JSONL rows pointing at real 16 kHz WAV files written beside the manifest.

Once written, a manifest never needs the network or FFmpeg again: ``audio`` is a path relative
to the manifest, and each row records ``duration`` and ``rms`` so a verifier can check that
what decodes later is what was written.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

from lora.data import audio as A
from lora.data.sources import Utterance
from lora.storage.atomic import write_jsonl


def audio_dir_for(manifest: Path) -> Path:
    return manifest.with_name(manifest.stem + "_audio")


def _wav_name(uid: str, taken: set[str]) -> str:
    """``<id>.wav`` where the id is a plain file name; otherwise (a path separator or ``..`` from a user's manifest,
    characters a file system may refuse, over 100 characters, or a name that differs only in case from an earlier
    one, which a macOS or Windows disk would overwrite) the id cleaned, plus 8 hex digits of its SHA-1. The row keeps
    the id as it is."""
    name = uid
    if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}", uid) or uid.lower() in taken:
        name = re.sub(r"[^A-Za-z0-9_-]+", "_", uid).strip("_")[:80] + "-" + hashlib.sha1(uid.encode()).hexdigest()[:8]
    taken.add(name.lower())
    return name + ".wav"


def write_manifest(path: str | Path, utts: Iterable[Utterance], text_of=lambda u: u.text) -> list[dict]:
    """Write WAVs to ``<stem>_audio/`` and the JSONL (atomically, last); returns the rows."""
    path = Path(path)
    folder = audio_dir_for(path)
    rows, taken = [], set()
    for u in utts:
        wav = folder / _wav_name(u.id, taken)
        A.write_wav(wav, u.audio)
        rows.append({"id": u.id, "audio": str(wav.relative_to(path.parent)), "text": text_of(u), "speaker": u.speaker,
                     "duration": round(u.duration, 4), "rms": round(A.rms(u.audio), 6)})
    write_jsonl(path, rows)
    return rows
