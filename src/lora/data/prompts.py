"""Recorded prompts: a ``key: text`` list (or Festvox's ``txt.done.data``, LJSpeech's ``metadata.csv``) and one
audio file per key, imported as a folder corpus.

The case this is built for ships with Debian: Asterisk's English core sounds, ~570 telephone
prompts ("Please enter your password followed by the pound key.") recorded by one professional
voice (Allison Smith), CC-BY-SA-3.0. ``asterisk-core-sounds-en`` holds the transcripts
(:data:`ASTERISK_TRANSCRIPTS`), ``asterisk-core-sounds-en-g722`` the audio as raw G.722, 16 kHz
wideband (:data:`ASTERISK_AUDIO`, keys with sub-folders such as ``digits/10``). Real speech, offline.
The ``-gsm`` and ``-wav`` packages put the same prompts over 8 kHz channels into the same folder; the
import reads one format (``audio_format``; G.722 by default for the installed prompts).

The transcripts were written for people, not for scoring, so :func:`clean_prompt` drops rows whose
text is not what is said: bracketed notes and tone descriptions (``[ascending tones]``,
``<beep ascending>``, ``(10 seconds of silence)``, ``at [@]``), digits (``press 1`` is spoken "one",
``28.8`` could be said several ways), symbols (``*``, ``#``) and web addresses. Ellipses
(``...to leave the conference.``) are removed; hyphenated spellings (``Call-Forward``,
``De-activated``) are kept as written, since the WER normalizer splits hyphens and a model may write
either form. Known typos are corrected word by word (:data:`TYPOS`).

The held-out part is chosen by text, not by clip: texts are normalized the way
:mod:`lora.data.prepare` compares them (lower case, letters, digits and spaces), shuffled with a
seed, and a fraction of them with *all* their clips goes to ``test``; a text spoken in several clips
counts once. Output, written atomically and cached on its inputs::

    OUTPUT/corpus.json
    OUTPUT/train/<voice>/<flatkey>.wav + <flatkey>.txt + ../corpus.json   (--source folder:OUTPUT/train)
    OUTPUT/test/<voice>/<flatkey>.wav + <flatkey>.txt + ../corpus.json    (--test-source folder:OUTPUT/test)

``flatkey`` is the key with ``/`` replaced by ``-``; the speaker of a ``folder:`` source is the
sub-folder, so every clip is spoken by ``<voice>``. ``corpus.json`` says the speech is recorded
(``"synthesized": false``) and describes it for reports. A rerun with the same inputs (transcripts
sha256, audio file names and sizes, held-out fraction, seed, voice, :data:`TYPOS`) does nothing;
``force`` replaces an earlier import of other inputs, never a folder that is not an import.
A clip that cannot be decoded stops the import with a DataError naming it, and nothing is written.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lora.data.text import sentence_key
from lora.errors import DataError
from lora.storage.atomic import atomic_dir, file_sha256
from lora.storage.cache import filling

IMPORT_VERSION = 1
ASTERISK_AUDIO = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
ASTERISK_PACKAGES = "asterisk-core-sounds-en asterisk-core-sounds-en-g722 asterisk-core-sounds-en-gsm ffmpeg"
ASTERISK_FORMATS = ("g722", "gsm", "wav")  # the codec packages Debian ships (asterisk-core-sounds-en-<format>)
INSTALL_HINT = f"install them: 'sudo apt-get install --no-install-recommends {ASTERISK_PACKAGES}'"
ASTERISK_LICENCE = "CC-BY-SA-3.0"
ASTERISK_CREDIT = "recorded by Allison Smith (theivrvoice.com), funded by Digium, Inc."

# Misspellings in core-sounds-en.txt (1.6.1), lower case -> what is said. Applied to whole words.
TYPOS = {
    "represenatives": "representatives",  # queue-periodic-announce ("All of our represenatives are ...")
    "fourtieth": "fortieth",  # digits/h-40
    "exclaimation": "exclamation",  # letters/exclaimation-point (dropped anyway: "[!]" note)
    "indentified": "identified",  # unidentified-no-callback ("Un-indentified or witheld")
    "witheld": "withheld",  # unidentified-no-callback
    "umute": "unmute",  # conf-adminmenu-menu8 ("mute or umute"; dropped anyway: digits)
    "decending": "descending",  # confbridge-leave ("<beep decending>"; dropped anyway: a tone)
    "thru": "through",  # priv-callee-options (informal spelling; the normalizer does not map it)
}

NOTE, DIGITS, SYMBOLS, WEB = "bracketed note", "digits", "symbols", "web address"
NO_WORDS = "no words"
_NOTE = re.compile(r"[\[\]<>(){}]")  # [ascending tones], <beep ascending>, (10 seconds of silence), at [@]
_WEB = re.compile(r"\w\.\w{2,}")  # www.asterisk.org (but not A.M. / P.M.)
_PUNCT = set(" '’‘-.,?!;:\"“”–—")  # what may stand beside letters: unspoken punctuation, apostrophes, hyphens
_WORD = re.compile(r"[^\W\d_]+")
_ELLIPSIS = re.compile(r"\.{2,}|…")
_CONTENT_FOLDERS = {"wav", "wavs", "audio", "clips", "recordings", "flac", "mp3"}


# The prompt lists read_prompt_list() reads, told apart by the first line; every line must then have that layout.
COLON, FESTVOX, LJSPEECH = "'key: text' lines", "Festvox's txt.done.data", "LJSpeech's metadata.csv"
LIST_LAYOUTS = {
    # Asterisk's core-sounds-en.txt and many voice products' prompt lists
    COLON: re.compile(r"(?P<key>[^:]*):(?P<text>.*)"),
    # Festival/Festvox txt.done.data: CMU ARCTIC and the other single-voice corpora built with Festvox
    FESTVOX: re.compile(r'\s*\(\s*(?P<key>\S+)\s+"(?P<text>(?:[^"\\]|\\.)*)"\s*\)\s*'),
    # LJSpeech's metadata.csv: the third column (numbers and abbreviations written out) when it is there
    LJSPEECH: re.compile(r"(?P<key>[^|]*)\|(?P<text>[^|]*)(?:\|(?P<normalized>[^|]*))?"),
}


def _layout(line: str) -> str:
    if line.lstrip().startswith("("):
        return FESTVOX  # ( key "text" )
    head = line.split("|", 1)[0]
    return LJSPEECH if "|" in line and ":" not in head and head.strip() else COLON


def read_prompt_list(path: str | Path) -> dict[str, str]:
    """Prompt list (gzip or plain UTF-8) as a dict key -> text, in any of :data:`LIST_LAYOUTS`; ``;`` comments
    and blank lines skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"transcripts file not found: {path}")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        lines = raw.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read it ({exc})") from None
    out: dict[str, str] = {}
    layout = None
    for lineno, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        layout = layout or _layout(line)
        m = LIST_LAYOUTS[layout].fullmatch(line)
        key = m and m["key"].strip()
        if not m or not key or len(key.split()) != 1:
            first = "" if layout == COLON else " like its first line"
            raise DataError(f"{path}:{lineno}: expected {layout}{first} (a key without spaces, the words said; "
                            f"layouts read: {', '.join(LIST_LAYOUTS)})")
        if key in out:
            raise DataError(f"{path}:{lineno}: key '{key}' is listed twice")
        text = m.groupdict().get("normalized") or m["text"]
        out[key] = re.sub(r"\\(.)", r"\1", text).strip() if layout == FESTVOX else text.strip()
    return out


def correct_typos(text: str) -> tuple[str, list[str]]:
    """``text`` with :data:`TYPOS` corrected word by word, and the corrections as ``"typo -> fix"``."""
    fixes: list[str] = []

    def fix(m: re.Match) -> str:
        word = m.group(0)
        good = TYPOS.get(word.lower())
        if good is None:
            return word
        fixes.append(f"{word} -> {good}")
        return good[0].upper() + good[1:] if word[0].isupper() else good

    return _WORD.sub(fix, text), fixes


def clean_prompt(text: str) -> tuple[str | None, str]:
    """``(cleaned text, "")``, or ``(None, reason)`` for a row whose text is not what is spoken."""
    t = " ".join(text.split())
    if _NOTE.search(t):
        return None, NOTE
    if any(c.isdigit() for c in t):
        return None, DIGITS
    if any(not (c.isalpha() or c in _PUNCT) for c in t):
        return None, SYMBOLS
    if _WEB.search(t):
        return None, WEB
    t = " ".join(_ELLIPSIS.sub(" ", t).split()).strip(" ,;:-")
    t = re.sub(r" ([,.?!;:])", r"\1", t)
    if not any(c.isalpha() for c in t):
        return None, NO_WORDS
    return correct_typos(t)[0], ""


def held_out_keys(texts: dict[str, str], held_out: float, seed: int) -> set[str]:
    """The keys of the held-out part: a seeded ``held_out`` fraction of the distinct texts, all their clips."""
    groups: dict[str, list[str]] = {}
    for key in sorted(texts):
        groups.setdefault(sentence_key(texts[key]), []).append(key)
    if len(groups) < 2:
        raise DataError(f"only {len(groups)} usable distinct text(s); holding some out needs at least 2")
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    n = min(len(order) - 1, max(1, round(held_out * len(order))))
    return {key for t in order[:n] for key in groups[t]}


def find_audio(audio_dir: Path, audio_format: str | None = None) -> dict[str, Path]:
    """key (path below ``audio_dir`` without extension) -> audio file, for every file the reader accepts (only
    ``.audio_format`` files when given: Asterisk installs each prompt once per codec package)."""
    from lora.data.sources import AUDIO_EXTENSIONS

    suffixes = AUDIO_EXTENSIONS if audio_format is None else (check_format(audio_format),)
    found: dict[str, Path] = {}
    for path in sorted(audio_dir.rglob("*")):
        if path.suffix.lower() not in suffixes or path.name.startswith(".") or not path.is_file():
            continue
        key = path.relative_to(audio_dir).with_suffix("").as_posix()
        if key in found:
            raise DataError(f"two audio files for key '{key}': {found[key]} and {path}; pick one format with "
                            f"--format {found[key].suffix[1:]} (or keep one file)")
        found[key] = path
    return found


def check_format(audio_format: str) -> str:
    """``g722`` or ``.g722`` -> ``.g722``, if the reader accepts it."""
    from lora.data.sources import AUDIO_EXTENSIONS

    suffix = "." + audio_format.lower().lstrip(".")
    if suffix not in AUDIO_EXTENSIONS:
        raise DataError(f"--format {audio_format}: not an audio format the reader accepts "
                        f"({', '.join(e[1:] for e in AUDIO_EXTENSIONS)})")
    return suffix


def cache_key(transcripts: Path, audio: dict[str, Path], held_out: float, seed: int, voice: str) -> str:
    h = hashlib.sha256()
    files = [(k, p.name, p.stat().st_size) for k, p in sorted(audio.items())]
    h.update(json.dumps([IMPORT_VERSION, file_sha256(transcripts), files, held_out, seed, voice,
                         sorted(TYPOS.items())]).encode())
    return h.hexdigest()[:16]


def _read_meta(folder: Path) -> dict:
    try:
        meta = json.loads((folder / "corpus.json").read_text(encoding="utf-8"))
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def _earlier(output: Path, key: str, force: bool) -> dict | None:
    """The summary of an import of the same inputs already in ``output``; refuse a folder we may not replace."""
    meta = _read_meta(output)
    if meta.get("key") == key and all(_read_meta(output / part).get("key") == key for part in ("train", "test")):
        return meta
    if output.is_file():
        raise DataError(f"--output {output} is a file; choose a folder")
    if not output.is_dir() or not any(output.iterdir()):
        return None
    if meta.get("kind") != "recorded" or "version" not in meta:
        raise DataError(f"--output {output} is not empty and is not an imported prompt corpus; choose another folder "
                        "(--force only replaces earlier imports)")
    if not force:
        raise DataError(f"--output {output} holds an import of other inputs; pass --force to replace it")
    return None


def import_prompts(audio_dir: str | Path, transcripts: str | Path, output: str | Path, held_out: float = 0.2,
                   seed: int = 0, voice: str | None = None, force: bool = False, workers: int = 2,
                   audio_format: str | None = None, log: Callable[[str], object] = print) -> dict:
    """Import every listed prompt with audio into ``output`` (see the module docstring); returns the summary
    written to ``corpus.json``, plus ``output`` and ``reused`` (True: an identical import was already there).
    ``audio_format``: read only files with this extension (``g722``, ``gsm``, ``wav``, ...)."""
    audio_dir, transcripts, output = Path(audio_dir), Path(transcripts), Path(output)
    if not audio_dir.is_dir():
        raise DataError(f"audio folder not found: {audio_dir}")
    if not 0 < held_out < 1:
        raise DataError(f"held_out must be between 0 and 1 (exclusive), got {held_out}")
    prompts = read_prompt_list(transcripts)
    voice = voice or voice_name(audio_dir)
    if not voice or "/" in voice or voice.startswith("."):
        raise DataError(f"invalid voice name {voice!r}: a folder name is needed (--voice NAME)")
    audio = find_audio(audio_dir, audio_format)
    key = cache_key(transcripts, audio, held_out, seed, voice)
    earlier = _earlier(output, key, force)
    if earlier:
        log(f"import: {output} already holds this import ({earlier['counts']['kept']} clips); nothing to do")
        return {**earlier, "output": str(output), "reused": True}

    matched = sorted(k for k in prompts if k in audio)
    if not matched:
        raise DataError(f"no audio file in {audio_dir} matches a key of {transcripts} (keys look like "
                        f"'{next(iter(prompts), '')}', audio files like '{next(iter(audio), 'none found')}')")
    flat = {k: k.replace("/", "-") for k in matched}
    if len(set(flat.values())) != len(flat):
        twins = sorted(k for k in matched if list(flat.values()).count(flat[k]) > 1)
        raise DataError(f"keys {', '.join(twins)} would share a file name in {output}; rename one")
    texts, dropped, corrected = _scorable(matched, prompts)
    log(f"import: decoding {len(texts)} of {len(prompts)} listed prompts from {audio_dir}")
    with atomic_dir(output, force=True, what="the imported prompts") as tmp:
        sizes = _decode(audio, texts, flat, tmp / ".clips", workers, dropped)
        test = held_out_keys(texts, held_out, seed)
        seconds = _place(tmp, tmp / ".clips", texts, test, flat, sizes, voice)
        meta = _summary(key, audio_dir, transcripts, voice, held_out, seed, prompts, audio, texts, test, dropped,
                        corrected, seconds)
        for folder, extra in ((tmp, {}), (tmp / "train", {"part": "train"}), (tmp / "test", {"part": "test"})):
            (folder / "corpus.json").write_text(json.dumps({**meta, **extra}, indent=2) + "\n", encoding="utf-8")
    c = meta["counts"]
    log(f"import: wrote {output} ({c['train']} train + {c['test']} test clips, {sum(c['dropped'].values())} dropped)")
    return {**meta, "output": str(output), "reused": False}


def voice_name(audio_dir: Path) -> str:
    """The audio folder's name, or its parent's where the folder is named for what it holds
    (``cmu_us_slt_arctic/wav``, ``LJSpeech-1.1/wavs``)."""
    folder = audio_dir.resolve()
    return folder.parent.name if folder.name.lower() in _CONTENT_FOLDERS else folder.name


def _scorable(keys: list[str], prompts: dict[str, str]) -> tuple[dict[str, str], dict[str, list[str]], dict]:
    """(cleaned text by key, dropped keys by reason, typo corrections by key) of the listed prompts with audio."""
    texts, dropped, corrected = {}, {}, {}
    for k in keys:
        text, why = clean_prompt(prompts[k])
        if text is None:
            dropped.setdefault(why, []).append(k)
            continue
        texts[k] = text
        if fixes := correct_typos(prompts[k])[1]:
            corrected[k] = fixes
    return texts, dropped, corrected


def _decode(audio: dict[str, Path], texts: dict[str, str], flat: dict[str, str], clips: Path, workers: int,
            dropped: dict[str, list[str]]) -> dict[str, int]:
    """Each prompt's audio decoded to ``clips/<flat>.wav`` in ``workers`` threads; a clip the toolkit rejects
    (silent, too short, ...) leaves ``texts`` for ``dropped``. Returns the kept clips' sample counts."""
    from lora.data.audio import decode_file, problem, write_wav

    clips.mkdir()

    def decode(k: str) -> tuple[str, str | None, int]:
        samples = decode_file(audio[k])
        why = problem(samples, texts[k])
        if why is None:
            write_wav(clips / f"{flat[k]}.wav", samples)
        return k, why and why.split(" (")[0], samples.size

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        try:
            results = list(pool.map(decode, sorted(texts)))
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    sizes = {}
    for k, why, size in results:
        if why:
            dropped.setdefault(why, []).append(k)
            del texts[k]
        else:
            sizes[k] = size
    return sizes


def _place(tmp: Path, clips: Path, texts: dict[str, str], test: set[str], flat: dict[str, str],
           sizes: dict[str, int], voice: str) -> dict[str, float]:
    """Each decoded clip into ``train/<voice>/`` or ``test/<voice>/`` beside its transcript; seconds per part."""
    from lora.data.audio import SAMPLE_RATE

    seconds = {"train": 0.0, "test": 0.0}
    for k, text in texts.items():
        part = "test" if k in test else "train"
        folder = tmp / part / voice
        folder.mkdir(parents=True, exist_ok=True)
        os.replace(clips / f"{flat[k]}.wav", folder / f"{flat[k]}.wav")
        (folder / f"{flat[k]}.txt").write_text(text + "\n", encoding="utf-8")
        seconds[part] += sizes[k] / SAMPLE_RATE
    clips.rmdir()
    return seconds


def _is_asterisk(audio_dir: Path, transcripts: Path) -> bool:
    return audio_dir.resolve() == ASTERISK_AUDIO.resolve() and transcripts.resolve() == ASTERISK_TRANSCRIPTS.resolve()


# How each Asterisk codec package's files are named in descriptions ("recorded speech, 1 voice (...): Asterisk ...").
_CODECS = {".g722": "G.722", ".gsm": "GSM 06.10 (8 kHz)", ".wav": "8 kHz PCM", ".ulaw": "G.711 u-law (8 kHz)",
           ".alaw": "G.711 A-law (8 kHz)"}


def _summary(key, audio_dir, transcripts, voice, held_out, seed, prompts, audio, texts, test, dropped, corrected,
             seconds) -> dict:
    asterisk = _is_asterisk(audio_dir, transcripts)
    codec = _CODECS.get(next(iter(audio.values())).suffix.lower(), "") if audio else ""
    what = f"Asterisk core sounds, {codec} telephone prompts" if asterisk else f"prompts listed in {transcripts.name}"
    n_test = sum(k in test for k in texts)
    return {
        "key": key,
        "version": IMPORT_VERSION,
        "synthesized": False,
        "kind": "recorded",
        "voices": [voice],
        "description": f"recorded speech, 1 voice ({voice}): {what}",
        "source": {"audio": str(audio_dir), "transcripts": str(transcripts)},
        "licence": ASTERISK_LICENCE if asterisk else None,
        "credit": ASTERISK_CREDIT if asterisk else None,
        "held_out": held_out,
        "seed": seed,
        "counts": {
            "listed": len(prompts),
            "kept": len(texts),
            "train": len(texts) - n_test,
            "test": n_test,
            "texts": {"train": len({sentence_key(t) for k, t in texts.items() if k not in test}),
                      "test": len({sentence_key(t) for k, t in texts.items() if k in test})},
            "listed_without_audio": sum(k not in audio for k in prompts),
            "audio_without_key": sum(k not in prompts for k in audio),
            "dropped": {why: len(keys) for why, keys in sorted(dropped.items())},
        },
        "seconds": {part: round(s, 2) for part, s in seconds.items()},
        "dropped": {why: sorted(keys) for why, keys in sorted(dropped.items())},
        "corrected": corrected,
        "listed_without_audio": sorted(k for k in prompts if k not in audio),
        "audio_without_key": sorted(str(audio[k].relative_to(audio_dir)) for k in audio if k not in prompts),
    }


def asterisk_problem(audio_format: str = "g722") -> str | None:
    """Why the installed Asterisk prompts in ``audio_format`` cannot be imported (None: they can)."""
    if not any(ASTERISK_AUDIO.glob(f"*.{audio_format}")):
        if audio_format not in ASTERISK_FORMATS:
            return (f"no Asterisk prompts in .{audio_format} (Debian packages them as {', '.join(ASTERISK_FORMATS)}: "
                    f"asterisk-core-sounds-en-<format>); {INSTALL_HINT}")
        return (f"the Asterisk prompts are not installed (no {ASTERISK_AUDIO}/*.{audio_format}: package "
                f"asterisk-core-sounds-en-{audio_format}); install it: 'sudo apt-get install --no-install-recommends "
                f"asterisk-core-sounds-en asterisk-core-sounds-en-{audio_format} ffmpeg'")
    if not ASTERISK_TRANSCRIPTS.is_file():
        return (f"{ASTERISK_TRANSCRIPTS} is missing (package asterisk-core-sounds-en, or an image whose dpkg "
                f"excludes /usr/share/doc); {INSTALL_HINT}, or pass --audio DIR --transcripts FILE")
    from lora.data.audio import RAW_FORMATS

    if shutil.which("ffmpeg") is None and f".{audio_format}" in RAW_FORMATS:
        return (f"the Asterisk prompts in {audio_format} are raw telephone audio, which needs the ffmpeg binary; "
                f"{INSTALL_HINT}")
    return None


def installed_asterisk(audio_format: str = "g722") -> tuple[Path, Path] | None:
    """(audio folder, transcripts file) of the installed Asterisk prompts, or None (see :func:`asterisk_problem`)."""
    return None if asterisk_problem(audio_format) else (ASTERISK_AUDIO, ASTERISK_TRANSCRIPTS)


def default_recorded_corpus(cache_dir: Path, log: Callable[[str], object] = print,
                            audio_format: str = "g722") -> Path | None:
    """The installed Asterisk prompts in ``audio_format`` imported (once) into ``cache_dir/asterisk-prompts`` (G.722)
    or ``cache_dir/asterisk-prompts-<format>``; None if not installed.

    Use ``folder:<it>/train`` to tune on and ``folder:<it>/test`` as held-out recorded speech.
    """
    found = installed_asterisk(audio_format)
    if found is None:
        return None
    out = Path(cache_dir) / ("asterisk-prompts" if audio_format == "g722" else f"asterisk-prompts-{audio_format}")
    with filling(out):
        import_prompts(*found, out, force=True, audio_format=audio_format, log=log)
    return out


def all_prompts_manifest(imported: Path, cache_dir: Path) -> Path:
    """A manifest of every clip of an import (its train and test folders, one voice), built once in ``cache_dir``:
    the ``recorded-prompts`` canary. Tuning on other speech, all of it is held out, and a canary needs the words
    (lora.evaluation.cost.words_to_see); a run tuned on the prompts drops the clips it trains on, and says so."""
    from lora.data.sources import read_folder
    from lora.storage.atomic import write_text
    from lora.storage.cache import filling

    meta = json.loads((imported / "corpus.json").read_text(encoding="utf-8"))
    out = Path(cache_dir) / f"{imported.name}-all"
    manifest = out / "manifest.jsonl"
    with filling(out):
        info = out / "corpus.json"
        if info.is_file() and json.loads(info.read_text(encoding="utf-8")).get("key") == meta["key"]:
            return manifest
        out.mkdir(parents=True, exist_ok=True)
        rows = []
        for part in ("train", "test"):
            for u in read_folder(imported / part):
                rows.append(json.dumps({"audio": u.extra["path"], "text": u.text, "speaker": u.speaker,
                                        "id": f"{part}-{u.id}"}))
        write_text(manifest, "\n".join(rows) + "\n")
        info.write_text(json.dumps({"key": meta["key"], "synthesized": False,
                                    "description": f"{meta['description']}, all {len(rows)} prompts"}),
                        encoding="utf-8")
    return manifest
