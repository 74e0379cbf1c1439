"""Offline speech corpus: sentences spoken by several espeak-ng voices, in the LibriSpeech layout.

Each voice is one speaker. Every sentence is spoken by ``voices_per_sentence`` voices chosen
with a seeded RNG, so a speaker-disjoint split still leaves held-out voices *and* (after
:func:`lora.data.prepare.split_data` drops overlapping texts) held-out sentences.

Deterministic: espeak-ng renders the same samples for the same text, voice and settings; we
resample with soxr and write FLAC with libsndfile, so the same inputs give the same bytes.
Cached: ``corpus.json`` records a key of (sentences, voices, espeak-ng version); a rerun with
the same key does nothing. Reports must call this corpus synthesized speech, and do.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from lora.errors import DataError
from lora.storage.atomic import atomic_dir

SYNTH_VERSION = 1
INSTALL_HINT = "install espeak-ng: 'sudo apt-get install espeak-ng' (Debian/Ubuntu) or 'brew install espeak-ng' (macOS)"


@dataclass(frozen=True)
class Voice:
    speaker: str  # LibriSpeech-style numeric speaker id
    name: str  # espeak-ng voice (+variant)
    speed: int  # words per minute
    pitch: int  # 0-99


# Ten accents/variants that espeak-ng ships in every build (no mbrola voices needed).
VOICES = (
    Voice("101", "en-us", 165, 50),
    Voice("102", "en-us+f3", 155, 60),
    Voice("103", "en-gb", 170, 45),
    Voice("104", "en-gb+f2", 160, 55),
    Voice("105", "en-gb-scotland", 160, 40),
    Voice("106", "en-gb-x-rp+m3", 150, 35),
    Voice("107", "en-029", 165, 50),
    Voice("108", "en-us-nyc+f4", 175, 65),
    Voice("109", "en-gb-x-gbclan", 155, 45),
    Voice("110", "en-gb-x-gbcwmd+f1", 150, 70),
)


def default_sentences() -> list[str]:
    text = resources.files("lora.data").joinpath("sentences.txt").read_text(encoding="utf-8")
    return [s.strip() for s in text.splitlines() if s.strip()]


def read_sentences(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"sentences file not found: {path}")
    out = [s.strip() for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]
    if not out:
        raise DataError(f"{path} holds no sentences (one sentence per line)")
    return out


def espeak_binary() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DataError(f"espeak-ng not found; {INSTALL_HINT}")
    return exe


def espeak_version() -> str:
    out = subprocess.run([espeak_binary(), "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def speak(text: str, voice: Voice):
    """Render ``text`` with ``voice``; returns float32 mono 16 kHz audio."""
    import soundfile as sf

    from lora.data.audio import to_mono_16k

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        cmd = [espeak_binary(), "-v", voice.name, "-s", str(voice.speed), "-p", str(voice.pitch), "-w", str(wav),
               "--", text]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not wav.is_file():
            raise DataError(f"espeak-ng failed for voice {voice.name}: {proc.stderr.strip() or 'no output'}")
        audio, sr = sf.read(str(wav), dtype="float32")
    return to_mono_16k(audio, sr, f"espeak-ng {voice.name}")


def plan(sentences: list[str], voices=VOICES, voices_per_sentence: int = 2,
         seed: int = 0) -> list[tuple[str, Voice, str]]:
    """(utterance id, voice, text) for every clip, deterministic in (sentences, voices, seed)."""
    if not 1 <= voices_per_sentence <= len(voices):
        raise DataError(f"--voices-per-sentence must be between 1 and {len(voices)}")
    rng = random.Random(seed)
    counts = {v.speaker: 0 for v in voices}
    jobs = []
    for text in sentences:
        for voice in rng.sample(list(voices), voices_per_sentence):
            jobs.append((f"{voice.speaker}-0-{counts[voice.speaker]:04d}", voice, text))
            counts[voice.speaker] += 1
    return jobs


def cache_key(sentences: list[str], voices, voices_per_sentence: int, seed: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([SYNTH_VERSION, espeak_version(), [asdict(v) for v in voices], voices_per_sentence, seed,
                         sentences]).encode())
    return h.hexdigest()[:16]


def _earlier(output: Path, key: str) -> dict | None:
    """``corpus.json`` of an earlier synthesis of the same inputs into ``output`` (None: synthesize);
    a DataError for a non-empty folder that is not a synthesized corpus."""
    meta_path = output / "corpus.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        return meta if meta.get("key") == key else None
    if output.exists() and any(output.iterdir()):
        raise DataError(f"{output} exists and is not a synthesized corpus; choose another --output")
    return None


def _speak_usable(text: str, voice: Voice, name: str):
    """:func:`speak`, refusing audio the data layer would reject (silent, empty, ...)."""
    from lora.data.audio import problem

    audio = speak(text, voice)
    why = problem(audio, text)
    if why:
        raise DataError(f"espeak-ng produced unusable audio for {name} ({voice.name}): {why}")
    return audio


def synthesize_corpus(output: str | Path, sentences: list[str] | None = None, voices=VOICES,
                      voices_per_sentence: int = 2, seed: int = 0, workers: int = 2, log=print) -> Path:
    """Write (or reuse) the corpus in ``output``; returns the folder."""
    import soundfile as sf

    from lora.data.audio import SAMPLE_RATE

    output = Path(output)
    sentences = sentences or default_sentences()
    key = cache_key(sentences, voices, voices_per_sentence, seed)
    meta = _earlier(output, key)
    if meta:
        log(f"synth: reusing cached corpus {output} ({meta['utterances']} utterances)")
        return output
    jobs = plan(sentences, voices, voices_per_sentence, seed)
    log(f"synth: speaking {len(sentences)} sentences with {len(voices)} espeak-ng voices -> {len(jobs)} clips")

    with atomic_dir(output, force=True) as tmp:
        def render(job):
            uid, voice, text = job
            audio = _speak_usable(text, voice, uid)
            folder = tmp / voice.speaker / "0"
            folder.mkdir(parents=True, exist_ok=True)
            sf.write(str(folder / f"{uid}.flac"), audio, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
            return uid, voice.speaker, text, audio.size / SAMPLE_RATE

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = list(pool.map(render, jobs))
        by_spk: dict[str, list[str]] = {}
        for uid, spk, text, _ in results:
            by_spk.setdefault(spk, []).append(f"{uid} {text}\n")
        for spk, lines in by_spk.items():
            (tmp / spk / "0" / f"{spk}-0.trans.txt").write_text("".join(lines), encoding="utf-8")
        meta = {
            "key": key,
            "synthesized": True,
            "engine": espeak_version(),
            "voices": [asdict(v) for v in voices],
            "voices_per_sentence": voices_per_sentence,
            "seed": seed,
            "sentences": len(sentences),
            "utterances": len(results),
            "hours": round(sum(r[3] for r in results) / 3600, 4),
        }
        (tmp / "corpus.json").write_text(json.dumps(meta, indent=2) + "\n")
    log(f"synth: wrote {output} ({meta['utterances']} utterances, {meta['hours']:.2f} h)")
    return output


def synthesize_folder(output: str | Path, sentences: list[str] | None, voice: str, log=print) -> Path:
    """One voice speaking every sentence: ``0000.wav`` + ``0000.txt``, ... and a ``corpus.json`` saying it is
    synthesized (what :mod:`lora.data.sources` reports). Cached like :func:`synthesize_corpus`."""
    from lora.data.audio import write_wav

    output = Path(output)
    sentences = sentences or default_sentences()
    v = Voice("1", voice, 165, 50)
    key = cache_key(sentences, [v], 1, 0)
    if _earlier(output, key):
        log(f"synth: reusing {output} ({len(sentences)} clips)")
        return output
    with atomic_dir(output, force=True, what="the synthesized clips") as tmp:
        def render(job):
            i, text = job
            audio = _speak_usable(text, v, f"sentence {i + 1}")
            write_wav(tmp / f"{i:04d}.wav", audio)
            (tmp / f"{i:04d}.txt").write_text(text + "\n", encoding="utf-8")
            return audio.size

        with ThreadPoolExecutor(max_workers=2) as pool:
            sizes = list(pool.map(render, enumerate(sentences)))
        meta = {"key": key, "synthesized": True, "engine": espeak_version(), "voices": [asdict(v)],
                "utterances": len(sentences), "hours": round(sum(sizes) / 16000 / 3600, 4)}
        (tmp / "corpus.json").write_text(json.dumps(meta, indent=2) + "\n")
    log(f"synth: wrote {output} ({len(sentences)} clips spoken by {voice}, {meta['hours'] * 60:.1f} min)")
    return output
