"""Screening and the speaker-disjoint split."""

from __future__ import annotations

import pytest

from lora.data.prepare import apply_text_mode, resolve_text_mode, screen, speaker_split
from lora.data.sources import Utterance
from lora.errors import DataError
from tests.conftest import tone


def _utts(speakers=6, per=5, shared_text=False):
    return [Utterance(f"{s}-{i}", tone(1.0, 200 + s * 10 + i), f"sentence {i if shared_text and i < 2 else f'{s}-{i}'}", f"spk{s}")
            for s in range(speakers) for i in range(per)]


def test_split_is_speaker_disjoint_and_deterministic():
    a = speaker_split(_utts(), (0.6, 0.2, 0.2), seed=1)
    b = speaker_split(_utts(), (0.6, 0.2, 0.2), seed=1)
    parts = {p: set(a.speakers(p)) for p in a.parts}
    assert parts["train"].isdisjoint(parts["validation"]) and parts["train"].isdisjoint(parts["test"])
    assert parts["validation"].isdisjoint(parts["test"])
    assert all(parts.values())
    assert {p: [u.id for u in us] for p, us in a.parts.items()} == {p: [u.id for u in us] for p, us in b.parts.items()}
    assert sum(len(v) for v in a.parts.values()) == 30


def test_different_seed_changes_split():
    held = {tuple(speaker_split(_utts(), seed=s).speakers("test")) for s in range(6)}
    assert len(held) > 1


def test_held_out_sentences_are_dropped_from_training():
    split = speaker_split(_utts(shared_text=True), (0.6, 0.2, 0.2), seed=0)
    held = {u.text for p in ("validation", "test") for u in split.parts[p]}
    assert not held & {u.text for u in split.parts["train"]}
    assert split.dropped_overlap > 0


def test_too_few_speakers():
    with pytest.raises(DataError, match="at least 3 speakers"):
        speaker_split(_utts(speakers=2))


def test_screen_counts_and_names_rejects():
    utts = _utts(speakers=1, per=3) + [Utterance("quiet", tone(1.0, amp=1e-5), "x", "s"),
                                       Utterance("long", tone(3.0), "x", "s"),
                                       Utterance("notext", tone(1.0), "", "s")]
    res = screen(utts, max_seconds=2.0)
    assert len(res.kept) == 3 and res.n_rejected == 3
    assert "quiet" in res.summary() and "long" in res.summary() and "notext" in res.summary()


def test_all_rejected_is_an_error():
    with pytest.raises(DataError, match="no usable utterances"):
        screen([Utterance("a", tone(1.0, amp=0.0), "x", "s")])


def test_text_modes():
    assert resolve_text_mode("auto", ["HELLO THERE", "GOOD DAY"]) == "sentence"
    assert resolve_text_mode("auto", ["Hello there."]) == "as-is"
    assert apply_text_mode("I SAW HIM AND I LEFT", "sentence") == "I saw him and I left"
    assert apply_text_mode("Hello There", "lower") == "hello there"
    with pytest.raises(DataError, match="valid: auto"):
        resolve_text_mode("shout", [])
