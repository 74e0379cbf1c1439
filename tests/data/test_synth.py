"""The offline espeak-ng corpus: deterministic, cached, honest about being synthesized."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from lora.data import synth as S
from lora.errors import DataError

pytestmark = pytest.mark.espeak
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_shipped_sentences_are_many_and_unique():
    sentences = S.default_sentences()
    assert len(sentences) >= 400 and len(set(sentences)) == len(sentences)
    assert any(any(c.isdigit() for c in s) or "percent" in s for s in sentences)


@needs_espeak
def test_corpus_is_deterministic_cached_and_real_speech(tmp_path):
    from lora.data.audio import problem
    from lora.data.sources import describe, load_source

    sentences = ["Hello from the first voice.", "The GPU has eighty gigabytes.", "Maria flew to Lisbon on Monday."]
    voices = S.VOICES[:3]
    a = S.synthesize_corpus(tmp_path / "a", sentences, voices, voices_per_sentence=2, log=lambda m: None)
    b = S.synthesize_corpus(tmp_path / "b", sentences, voices, voices_per_sentence=2, log=lambda m: None)
    assert _digest(a) == _digest(b)
    said = []
    S.synthesize_corpus(a, sentences, voices, voices_per_sentence=2, log=said.append)
    assert "reusing cached corpus" in said[0]
    utts = list(load_source(f"synth:{a}"))
    assert len(utts) == 6 and len({u.speaker for u in utts}) == 3
    assert all(problem(u.audio, u.text) is None and u.duration > 0.5 for u in utts)
    assert describe(f"synth:{a}").synthesized


@needs_espeak
def test_user_sentences_file(tmp_path):
    from lora.scripts.synth_corpus import main

    sentences = tmp_path / "domain.txt"
    sentences.write_text("Kubectl rollout restart deployment.\n\nThe p99 latency is forty milliseconds.\n")
    assert main(["--output", str(tmp_path / "c"), "--sentences", str(sentences), "--voices-per-sentence", "3"]) == 0
    assert len(list((tmp_path / "c").rglob("*.flac"))) == 6


def test_missing_espeak_names_install_command(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="apt-get install espeak-ng.*brew install espeak-ng"):
        S.espeak_binary()


def test_empty_sentences_file(tmp_path):
    (tmp_path / "s.txt").write_text("\n\n")
    with pytest.raises(DataError, match="no sentences"):
        S.read_sentences(tmp_path / "s.txt")
