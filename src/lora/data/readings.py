"""Recorded speech that installs with pip: the human readings in Moonshine's wheels, cut into clips with checked
transcripts, as a ``folder:`` corpus in the cache (the ``recorded-readings`` canary, docs/canaries.md).

* ``two_cities.wav`` (moonshine-voice 0.1.5, 44 s, 48 kHz): Pete Warden, Moonshine's author, reading the first
  paragraph of Dickens's *A Tale of Two Cities* (public domain; Project Gutenberg #98, Book 1 chapter 1). Cut at
  its pauses into ten clips of two clauses each; the text of each is the book's, and base-en's transcript of every
  clip was read against it when the cuts were chosen (docs/canaries.md, "Recorded speech").
* ``beckett.wav`` (moonshine-cpp, moonshine-voice and useful-moonshine-onnx all ship it, byte for byte): a man
  reading Beckett's "Ever tried. Ever failed..." (10 s).

Left out, and why: ``endgame_nagg_nell.wav`` is synthesized (two ZipVoice voices), not recorded; ``clone-test.wav``
has no transcript anyone checked (the one in Moonshine's docs is not what it says); ``success.wav``/``error.wav``
are tones. A wheel file that is not the one these cuts were made for (its SHA-256 differs) is left out and the
corpus says so: cuts on other audio would be wrong transcripts.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from lora.model.offline import RECORDED_REFERENCES, recorded_audio

TWO_CITIES_SHA256 = "f3348494d77cb74a02862f5e685ed09faf3e75832c5cc5c80703282c2cd8b52e"  # moonshine-voice 0.1.5's
# (start s, end s, text): cut midway in the pauses between clauses (the first starts 0.3 s before the voice: with
# its 1.2 s of leading silence base-en wrote nothing for the clip)
TWO_CITIES = [
    (0.90, 4.78, "It was the best of times, it was the worst of times,"),
    (4.78, 8.50, "it was the age of wisdom, it was the age of foolishness,"),
    (8.50, 13.10, "it was the epoch of belief, it was the epoch of incredulity,"),
    (13.10, 17.10, "it was the season of Light, it was the season of Darkness,"),
    (17.10, 20.84, "it was the spring of hope, it was the winter of despair,"),
    (20.84, 24.30, "we had everything before us, we had nothing before us,"),
    (24.30, 28.70, "we were all going direct to Heaven, we were all going direct the other way -"),
    (28.70, 32.50, "in short, the period was so far like the present period,"),
    (32.50, 36.70, "that some of its noisiest authorities insisted on its being received,"),
    (36.70, 44.37, "for good or for evil, in the superlative degree of comparison only."),
]
VERSION = 1  # bump when the cuts or texts change: the cached corpus is rebuilt


def wheel_asset(module: str, name: str) -> Path | None:
    """``<module>/assets/<name>`` of an installed wheel, found without importing it; None if absent."""
    spec = importlib.util.find_spec(module)
    if not spec or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / name
    return path if path.is_file() else None


def readings_folder(cache: Path) -> tuple[Path, str] | None:
    """(the corpus folder, what it holds) in ``cache``, built once; None when no wheel ships a reading."""
    from lora.data import audio as A
    from lora.storage.cache import filling

    cities = wheel_asset("moonshine_voice", "two_cities.wav")
    left_out = ""
    if cities is not None and hashlib.sha256(cities.read_bytes()).hexdigest() != TWO_CITIES_SHA256:
        cities, left_out = None, " (two_cities.wav left out: not the file its cuts were made for)"
    beckett = recorded_audio()
    if cities is None and not beckett:
        return None
    parts = (["Pete Warden reading A Tale of Two Cities, 10 clips"] if cities else []) + (
        ["beckett.wav, 1 clip"] if beckett else [])
    description = f"recorded speech from Moonshine's wheels: {'; '.join(parts)}{left_out}"
    key = hashlib.sha256(json.dumps([VERSION, str(cities), [str(b) for b in beckett]]).encode()).hexdigest()[:16]
    folder = Path(cache) / "recorded-readings"
    with filling(folder):
        info = folder / "corpus.json"
        if info.is_file() and json.loads(info.read_text(encoding="utf-8")).get("key") == key:
            return folder, description
        if cities is not None:
            audio = A.decode_file(cities)
            for i, (start, end, text) in enumerate(TWO_CITIES, 1):
                clip = folder / "pete-warden" / f"two-cities-{i:02d}"
                clip.parent.mkdir(parents=True, exist_ok=True)
                A.write_wav(clip.with_suffix(".wav"), audio[int(start * A.SAMPLE_RATE):int(end * A.SAMPLE_RATE)])
                clip.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
        if beckett:
            clip = folder / "beckett-reader" / "beckett"
            clip.parent.mkdir(parents=True, exist_ok=True)
            A.write_wav(clip.with_suffix(".wav"), A.decode_file(beckett[0]))
            clip.with_suffix(".txt").write_text(RECORDED_REFERENCES[beckett[0].name] + "\n", encoding="utf-8")
        info.write_text(json.dumps({"key": key, "synthesized": False, "description": description}), encoding="utf-8")
    return folder, description
