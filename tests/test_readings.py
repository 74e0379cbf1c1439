"""The recorded speech that pip installs (lora.data.readings) and the all-prompts canary (lora.data.prompts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lora.data import readings as RD
from lora.data.sources import describe, read_folder, read_manifest

DICKENS = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
           "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it "
           "was the season of Darkness, it was the spring of hope, it was the winter of despair, we had everything "
           "before us, we had nothing before us, we were all going direct to Heaven, we were all going direct the "
           "other way - in short, the period was so far like the present period, that some of its noisiest "
           "authorities insisted on its being received, for good or for evil, in the superlative degree of "
           "comparison only.")  # Project Gutenberg #98, Book 1, chapter 1, first paragraph (its dash as " -")


@pytest.mark.offline_model
def test_the_readings_in_the_wheels_become_a_recorded_corpus_with_the_books_text(tmp_path):
    if RD.wheel_asset("moonshine_voice", "two_cities.wav") is None:
        pytest.skip("moonshine-voice is not installed (pip install 'moonshine-lora[offline]')")
    folder, description = RD.readings_folder(tmp_path)
    clips = list(read_folder(folder))
    assert len(clips) == 11 and {u.speaker for u in clips} == {"pete-warden", "beckett-reader"}
    cities = sorted((u for u in clips if u.speaker == "pete-warden"), key=lambda u: u.id)
    assert " ".join(u.text for u in cities) == DICKENS and len(DICKENS.split()) == 120  # the dash counts here
    assert all(2.0 < u.duration < 8.0 and u.audio.std() > 0.01 for u in cities)  # speech in every cut
    info = describe(f"folder:{folder}")
    assert not info.synthesized and "Pete Warden reading A Tale of Two Cities, 10 clips" in info.description
    assert RD.readings_folder(tmp_path) == (folder, description)  # built once


@pytest.mark.offline_model
def test_a_reading_that_is_not_the_file_the_cuts_were_made_for_is_left_out_and_said(tmp_path, monkeypatch):
    if RD.wheel_asset("moonshine_voice", "two_cities.wav") is None:
        pytest.skip("moonshine-voice is not installed (pip install 'moonshine-lora[offline]')")
    monkeypatch.setattr(RD, "TWO_CITIES_SHA256", "0" * 64)
    folder, description = RD.readings_folder(tmp_path)
    assert [u.speaker for u in read_folder(folder)] == ["beckett-reader"]
    assert "two_cities.wav left out: not the file its cuts were made for" in description


def test_the_all_prompts_canary_lists_both_folds_under_the_voice(tmp_path):
    """A made-up import (two clips per fold): the manifest names every clip once, with its voice as speaker, and
    says it is recorded speech."""
    import numpy as np

    from lora.data import audio as A
    from lora.data.prompts import all_prompts_manifest

    imported = tmp_path / "asterisk-prompts"
    for part in ("train", "test"):
        for i in range(2):
            wav = imported / part / "en_US_f_Allison" / f"{part}{i}.wav"
            wav.parent.mkdir(parents=True, exist_ok=True)
            A.write_wav(wav, (0.1 * np.sin(np.arange(16000) * (0.05 + i / 100))).astype(np.float32))
            wav.with_suffix(".txt").write_text(f"{part} prompt {i}\n")
    (imported / "corpus.json").write_text(json.dumps({"key": "k1", "description": "recorded speech, 1 voice"}))
    manifest = all_prompts_manifest(imported, tmp_path)
    rows = list(read_manifest(manifest))
    assert sorted(u.text for u in rows) == ["test prompt 0", "test prompt 1", "train prompt 0", "train prompt 1"]
    assert {u.speaker for u in rows} == {"en_US_f_Allison"} and len({u.id for u in rows}) == 4
    info = describe(f"manifest:{manifest}")
    assert not info.synthesized and info.description.startswith("recorded speech, 1 voice, all 4 prompts")
    assert all(Path(u.extra["path"]).is_file() for u in rows)
