"""Decoded clips kept on disk, not in RAM: the memory a run needs does not grow with its corpus.

:class:`AudioStore` appends each clip as 16-bit PCM to one file and reads a clip back when a
batch needs it (one seek and read, about 128 KB for a 4 s clip). Plain reads, not ``mmap``: the
kernel keeps recently read pages in its cache, outside the process, so the process's resident
memory stays flat; a memory map (what ``datasets``' Arrow files use) would count every page it
ever touched as the process's own. 16-bit because that is what the audio was recorded in:
a clip decoded from PCM-16 (WAV, FLAC) round-trips exactly, and the held-out manifest is PCM-16
already. The file lives in the cache folder (``MOONSHINE_LORA_CACHE``) and is deleted when the
run ends.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import numpy as np

SCALE = 32768.0


class StoredAudio:
    """A clip in an :class:`AudioStore`: ``size`` samples at byte ``offset``; ``load()`` returns float32."""

    __slots__ = ("offset", "size", "store")

    def __init__(self, store: AudioStore, offset: int, size: int):
        self.store, self.offset, self.size = store, offset, size

    def load(self) -> np.ndarray:
        return self.store.read(self.offset, self.size)


class AudioStore:
    def __init__(self, folder: str | Path):
        from lora.storage.atomic import writing

        folder = Path(folder)
        with writing(folder, "the audio store"):
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix="clips-", suffix=".pcm16", dir=folder)
        self.path = Path(name)
        self._file = open(fd, "w+b")  # noqa: SIM115  (kept open for the store's life; closed in close())
        self._end = 0
        self._dirty = False
        self._flush_lock = threading.Lock()

    def add(self, audio: np.ndarray) -> StoredAudio:
        from lora.storage.atomic import writing

        pcm = np.clip(np.round(np.asarray(audio, dtype=np.float64) * SCALE), -SCALE, SCALE - 1).astype("<i2")
        with writing(self.path, "decoded audio"):
            self._file.seek(self._end)
            self._file.write(pcm.tobytes())
        self._dirty = True
        ref = StoredAudio(self, self._end, pcm.size)
        self._end += pcm.nbytes
        return ref

    def read(self, offset: int, size: int) -> np.ndarray:
        """One clip; safe from several threads (``os.pread`` moves no shared file position)."""
        if self._dirty:
            with self._flush_lock:
                if self._dirty:
                    self._file.flush()
                    self._dirty = False
        data = os.pread(self._file.fileno(), 2 * size, offset)
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(SCALE)

    @property
    def bytes(self) -> int:
        return self._end

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> AudioStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def keep_on_disk(utts, store: AudioStore | None):
    """Move each utterance's decoded samples into ``store`` (no-op without one); returns ``utts``."""
    if store is not None:
        for u in utts:
            if isinstance(u.samples, np.ndarray):
                u.samples = store.add(u.samples)
    return utts
