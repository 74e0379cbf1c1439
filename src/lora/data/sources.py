"""Where utterances come from. Every source yields :class:`Utterance` with real decoded audio.

Source specs (``--source``, ``--validation-source``, ``--test-source``):

* ``librispeech[:SPLIT]``    LibriSpeech streamed with ``datasets`` (needs the hub); SPLIT overrides --ls-split
* ``librispeech-dir:PATH``   a downloaded OpenSLR folder (``speaker/chapter/*.flac`` + ``*.trans.txt``)
* ``manifest:PATH``          JSONL (or CSV/TSV) rows with ``audio``, ``text``, optional ``speaker``/``id``
* ``folder:PATH``            a folder of recordings, ``name.wav`` (or .flac, .mp3, ...) beside ``name.txt``
* ``audiofolder:PATH``       Hugging Face's audiofolder layout: ``metadata.csv``/``metadata.jsonl`` with
                             ``file_name`` and ``transcription`` (or ``text``), optional ``speaker``
* ``synth:PATH``             the offline espeak-ng corpus written by ``lora.scripts.synth_corpus``

``audiofolder`` is read here, not with ``load_dataset("audiofolder")``: datasets 5 encodes every
audio column with torchcodec (and FFmpeg's libraries) even when it is not decoded, which a CPU box
with a plain torch does not have. The layout's rules (one metadata file per folder, ``file_name``
relative to it) are followed as datasets documents them.

A folder or manifest whose folder holds a ``corpus.json`` with ``"synthesized": true`` (written by
``synth_corpus``) is reported as synthesized speech; anything else as recorded, described by the
``corpus.json`` ``"description"`` where there is one (``lora.scripts.import_prompts`` writes it).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lora.data import audio as A
from lora.data.store import StoredAudio
from lora.errors import DataError
from lora.storage.artifacts import jsonl_rows
from lora.storage.cache import hub_offline_reason

log = logging.getLogger(__name__)

LIBRISPEECH_REPO = "openslr/librispeech_asr"
LIBRISPEECH_SPLITS = {
    "clean": ("train.100", "train.360", "validation", "test"),
    "other": ("train.500", "validation", "test"),
    "all": ("train.clean.100", "train.clean.360", "train.other.500", "validation.clean",
            "validation.other", "test.clean", "test.other"),
}
SOURCE_KINDS = ("librispeech", "librispeech-dir", "manifest", "folder", "audiofolder", "synth")
SOURCE_HELP = "librispeech[:SPLIT], librispeech-dir:PATH, manifest:PATH, folder:PATH, audiofolder:PATH, synth:PATH"
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".aac", ".webm", ".aiff", ".aif", ".g722", ".gsm",
                    ".ulaw", ".alaw")


@dataclass
class Utterance:
    id: str
    samples: np.ndarray | StoredAudio  # float32 mono 16 kHz in memory, or a clip in an AudioStore on disk
    text: str
    speaker: str
    extra: dict = field(default_factory=dict)

    @property
    def audio(self) -> np.ndarray:
        """The clip as float32 mono 16 kHz (read from disk when it is stored there)."""
        return self.samples if isinstance(self.samples, np.ndarray) else self.samples.load()

    @property
    def n_samples(self) -> int:
        return int(self.samples.size)

    @property
    def duration(self) -> float:
        return self.n_samples / A.SAMPLE_RATE


@dataclass
class SourceInfo:
    """What a report needs to say about the data: where it came from, and whether it is synthesized."""

    spec: str
    kind: str
    synthesized: bool
    description: str


def validate_librispeech(config: str, split: str) -> None:
    if config not in LIBRISPEECH_SPLITS:
        raise DataError(f"unknown LibriSpeech config '{config}'; valid: {', '.join(LIBRISPEECH_SPLITS)}")
    if split not in LIBRISPEECH_SPLITS[config]:
        raise DataError(f"unknown split '{split}' for LibriSpeech config '{config}'; "
                        f"valid: {', '.join(LIBRISPEECH_SPLITS[config])}")


def stream_librispeech(config: str = "clean", split: str = "train.100", n: int = 300, seed: int = 0,
                       buffer: int = 1000, repo: str = LIBRISPEECH_REPO, data_files=None) -> Iterator[Utterance]:
    """Stream ``n`` LibriSpeech utterances through a bounded shuffle buffer.

    ``repo``/``data_files`` exist so tests can drive this exact path with a local parquet file.
    Audio is fetched undecoded and decoded by :mod:`lora.data.audio`, so no torchcodec is needed.
    """
    from datasets import Audio, load_dataset

    if data_files is None:
        validate_librispeech(config, split)
        reason = hub_offline_reason()
        if reason:
            raise DataError(f"LibriSpeech streaming needs the Hugging Face hub, but {reason}; offline, use "
                            "--preset offline or --source librispeech-dir:PATH / manifest:PATH / synth:PATH")
        ds = load_dataset(repo, config, split=split, streaming=True)
    else:
        ds = load_dataset(repo, data_files=data_files, split=split, streaming=True)
    ds = ds.cast_column("audio", Audio(decode=False)).shuffle(seed=seed, buffer_size=buffer).take(n)
    for row in ds:
        cell = row["audio"]
        uid = str(row.get("id") or Path(cell.get("path") or "").stem)
        wav = A.decode_bytes(cell["bytes"], uid) if cell.get("bytes") else A.decode_file(cell["path"])
        yield Utterance(uid, wav, row["text"], str(row.get("speaker_id", uid.split("-")[0])))


def read_librispeech_dir(root: str | Path) -> Iterator[Utterance]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"LibriSpeech folder not found: {root}")
    transcripts = sorted(root.rglob("*.trans.txt"))
    if not transcripts:
        raise DataError(f"{root} holds no '*.trans.txt' files; expected the OpenSLR layout speaker/chapter/*.flac")
    for trans in transcripts:
        try:
            lines = trans.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise DataError(f"{trans}: not UTF-8 text (bad byte at offset {exc.start})") from None
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            uid, _, text = line.strip().partition(" ")
            audio_path = next((trans.parent / f"{uid}{ext}" for ext in (".flac", ".wav")
                               if (trans.parent / f"{uid}{ext}").exists()), trans.parent / f"{uid}.flac")
            if not text:
                log.debug("%s:%d has no text", trans, lineno)
            yield Utterance(uid, A.decode_file(audio_path), text, uid.split("-")[0],
                            {"path": str(audio_path.resolve())})


def _manifest_rows(path: Path) -> Iterator[tuple[int, dict]]:
    if path.suffix.lower() in (".csv", ".tsv"):
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        try:
            for lineno, row in enumerate(reader, 2):
                yield lineno, {k: v for k, v in row.items() if isinstance(k, str)}
        except csv.Error as exc:
            raise DataError(f"{path}: malformed CSV ({exc})") from None
        return
    yield from jsonl_rows(path, DataError)


def read_manifest(path: str | Path) -> Iterator[Utterance]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    root = path.parent.resolve()
    for lineno, row in _manifest_rows(path):
        if not isinstance(row.get("audio"), str) or not row["audio"]:
            raise DataError(f"{path}:{lineno}: missing 'audio' (a file path relative to the manifest or absolute)")
        if not isinstance(row.get("text"), str):
            raise DataError(f"{path}:{lineno}: missing 'text'")
        audio_path = Path(row["audio"])
        if not audio_path.is_absolute():
            audio_path = path.parent / audio_path
        try:
            wav = A.decode_file(audio_path)  # first: a path that cannot be a file fails here as bad input
        except DataError as exc:
            raise DataError(f"{path}:{lineno}: {exc}") from None
        resolved = audio_path.resolve()
        uid = str(row.get("id") or _manifest_clip_id(root, resolved))
        yield Utterance(uid, wav, row["text"], str(row.get("speaker") or "unknown"),
                        {"path": str(resolved), **{k: row[k] for k in ("duration", "rms") if k in row}})


def _clip_id(root: Path, audio: Path) -> str:
    return "-".join(audio.relative_to(root).with_suffix("").parts)


def _manifest_clip_id(root: Path, audio: Path) -> str:
    """A row without ``id``: its path under the manifest's folder ``root``, as ``folder:`` names clips
    (``day1/0001.wav`` and ``day2/0001.wav`` are two clips, not one id twice); a file outside that folder, its file
    name. Both paths resolved."""
    try:
        return _clip_id(root, audio)
    except ValueError:
        return audio.stem


def read_folder(root: str | Path) -> Iterator[Utterance]:
    """Every audio file under ``root`` with its transcript in the ``.txt`` file of the same name.

    The speaker is the sub-folder a clip is in (the folder's own name for clips at the top).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"folder not found: {root}")
    clips = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    if not clips:
        raise DataError(f"{root} holds no audio files ({', '.join(AUDIO_EXTENSIONS[:4])}, ...)")
    if not any(p.with_suffix(".txt").is_file() for p in clips):
        raise DataError(f"{root} holds no transcripts: a folder source needs name.txt beside each name.wav "
                        "(or use --source manifest:FILE / audiofolder:PATH)")
    for clip in clips:
        txt = clip.with_suffix(".txt")
        if not txt.is_file():
            raise DataError(f"{clip}: clip without text; write its transcript to {txt.name} beside it, or remove it")
        try:
            text = txt.read_text(encoding="utf-8-sig").strip()
        except UnicodeDecodeError as exc:
            raise DataError(f"{txt}: not UTF-8 text (bad byte at offset {exc.start})") from None
        rel = clip.parent.relative_to(root)
        speaker = rel.parts[0] if rel.parts else root.resolve().name
        yield Utterance(_clip_id(root, clip), A.decode_file(clip), text, speaker, {"path": str(clip.resolve())})


AUDIOFOLDER_TEXT = ("transcription", "text", "sentence")


def read_audiofolder(root: str | Path) -> Iterator[Utterance]:
    """Hugging Face's audiofolder layout: each ``metadata.csv`` / ``metadata.jsonl`` names its folder's clips."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"folder not found: {root}")
    metas = sorted(p for p in root.rglob("metadata.*") if p.name in ("metadata.csv", "metadata.jsonl"))
    if not metas:
        raise DataError(f"{root} has no metadata.csv or metadata.jsonl (the audiofolder layout); for name.wav + "
                        f"name.txt pairs use --source folder:{root}")
    for meta in metas:
        for lineno, row in _manifest_rows(meta):
            name = row.get("file_name")
            if not isinstance(name, str) or not name:
                raise DataError(f"{meta}:{lineno}: missing 'file_name'")
            key = next((k for k in AUDIOFOLDER_TEXT if isinstance(row.get(k), str)), None)
            if key is None:
                raise DataError(f"{meta}:{lineno}: clip without text (no {' / '.join(AUDIOFOLDER_TEXT)} column)")
            clip = meta.parent / name
            try:
                wav = A.decode_file(clip)
            except DataError as exc:
                raise DataError(f"{meta}:{lineno}: {exc}") from None
            speaker = row.get("speaker") or row.get("speaker_id") or row.get("client_id") or root.resolve().name
            yield Utterance(str(row.get("id") or _clip_id(root, clip)), wav, row[key], str(speaker),
                            {"path": str(clip.resolve())})


def parse_spec(spec: str) -> tuple[str, str]:
    kind, _, arg = spec.partition(":")
    if kind not in SOURCE_KINDS:
        raise DataError(f"unknown source '{spec}'; valid: {SOURCE_HELP}")
    if kind != "librispeech" and not arg:
        raise DataError(f"source '{kind}' needs a path: --source {kind}:PATH")
    return kind, arg


def _corpus_meta(folder: Path) -> dict:
    meta = folder / "corpus.json"
    try:
        return json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {}
    except (OSError, ValueError):
        return {}


def describe(spec: str, config: str = "clean", split: str = "train.100") -> SourceInfo:
    kind, arg = parse_spec(spec)
    if kind == "librispeech":
        return SourceInfo(spec, kind, False, f"LibriSpeech {config}/{arg or split} streamed from the hub "
                                             f"({LIBRISPEECH_REPO})")
    if kind == "synth":
        voices = _corpus_meta(Path(arg)).get("voices", [])
        return SourceInfo(spec, kind, True, f"synthesized speech: espeak-ng, {len(voices)} voices ({arg})")
    if kind == "librispeech-dir":
        return SourceInfo(spec, kind, False, f"LibriSpeech folder {arg}")
    folder = Path(arg) if kind in ("folder", "audiofolder") else Path(arg).parent
    meta = _corpus_meta(folder)
    what = {"manifest": "manifest", "folder": "folder", "audiofolder": "audiofolder"}[kind]
    if meta.get("synthesized"):
        engine = str(meta.get("engine", "espeak-ng")).split(":")[0].split("  ")[0]
        voices = len(meta.get("voices", []))
        return SourceInfo(spec, kind, True,
                          f"synthesized speech ({engine}, {voices} voice{'s' if voices != 1 else ''}): {what} {arg}")
    if isinstance(meta.get("description"), str):  # a recorded corpus that says what it is (lora.data.prompts)
        return SourceInfo(spec, kind, False, f"{meta['description']} ({what} {arg})")
    return SourceInfo(spec, kind, False, f"{what} {arg}")


def load_source(spec: str, *, config: str = "clean", split: str = "train.100", n: int = 300,
                seed: int = 0, buffer: int = 1000) -> Iterator[Utterance]:
    kind, arg = parse_spec(spec)
    if kind == "librispeech":
        return stream_librispeech(config, arg or split, n=n, seed=seed, buffer=buffer)
    if kind == "manifest":
        return read_manifest(arg)
    if kind == "folder":
        return read_folder(arg)
    if kind == "audiofolder":
        return read_audiofolder(arg)
    if kind == "synth" and not (Path(arg) / "corpus.json").is_file():
        raise DataError(f"{arg} is not a synthesized corpus (no corpus.json); create it with "
                        f"python -m lora.scripts.synth_corpus --output {arg}")
    return read_librispeech_dir(arg)
