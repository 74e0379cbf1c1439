"""Screening and the speaker-disjoint split."""

from __future__ import annotations

import pytest

from lora.data.prepare import apply_text_mode, resolve_text_mode, screen, speaker_split
from lora.data.sources import Utterance
from lora.errors import DataError
from tests.conftest import tone


def _utts(speakers=6, per=5, shared_text=False):
    return [Utterance(f"{s}-{i}", tone(1.0, 200 + s * 10 + i), f"sentence {i if shared_text and i < 2 else f'{s}-{i}'}",
                      f"spk{s}")
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
    from lora.data.prepare import split_data

    split = split_data(_utts(shared_text=True), (0.6, 0.2, 0.2), seed=0, mode="speaker")
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
    # an unknown mode is refused where every config rule lives (tests/test_config.py)


def test_auto_splits_by_speaker_with_enough_speakers_and_by_utterance_with_one():
    from lora.data.prepare import split_data

    many = split_data(_utts(), (0.6, 0.2, 0.2), seed=0)
    assert many.mode == "speaker" and many.reason == "auto: 6 speakers for 3 parts"
    one = split_data(_utts(speakers=1, per=20), (0.6, 0.2, 0.2), seed=0)
    assert one.mode == "utterance" and "1 speaker for 3 parts" in one.reason
    assert all(one.parts.values()) and sum(len(v) for v in one.parts.values()) == 20
    assert split_data(_utts(), (0.6, 0.2, 0.2), seed=0, mode="utterance").mode == "utterance"  # asked for wins
    with pytest.raises(DataError, match="use --split-by utterance"):
        split_data(_utts(speakers=1), mode="speaker")


def test_utterance_split_keeps_a_sentence_in_one_part():
    from lora.data.prepare import utterance_split

    utts = [Utterance(f"u{i}", tone(1.0, 200 + i), f"Sentence {i % 7}!", "me") for i in range(28)]  # each 4 times
    split = utterance_split(utts, (0.6, 0.2, 0.2), seed=3)
    where = {}
    for part, us in split.parts.items():
        for u in us:
            assert where.setdefault(u.text, part) == part, f"{u.text} in two parts"
    assert split.parts["validation"] and split.parts["test"] and split.dropped_overlap == 0
    assert [u.id for u in utterance_split(utts, (0.6, 0.2, 0.2), seed=3).parts["test"]] == \
        [u.id for u in split.parts["test"]]


def test_given_test_set_leaves_training_and_overlap_is_counted(tmp_path):
    from lora.data.prepare import split_data

    utts = _utts(speakers=1, per=10)
    for u in utts:
        u.extra["path"] = f"/clips/{u.id}.wav"
    given = [Utterance("t0", tone(1.0, 999), "something new", "me", {"path": "/clips/0-3.wav"}),  # the same file
             Utterance("t1", tone(1.0, 998), "Sentence 0-5", "me", {"path": "/other.wav"}),  # the same sentence
             Utterance("t2", tone(1.0, 997), "unrelated", "me", {"path": "/other2.wav"})]
    screen(given)  # fingerprints, as the pipeline computes them
    split = split_data(screen(utts).kept, (0.8, 0.2, 0.5), seed=0, given={"test": given})
    assert split.given == ("test",) and [u.id for u in split.parts["test"]] == ["t0", "t1", "t2"]
    train_ids = {u.id for u in split.parts["train"]}
    assert "0-3" not in train_ids and "0-5" not in train_ids
    assert (split.dropped_same_audio, split.dropped_overlap) == (1, 1)
    assert len(split.parts["validation"]) == 2  # 0.2 of 10: the test ratio no longer counts
    copy = Utterance("c", utts[1].audio.copy(), "a copy under another name", "me", {"path": "/elsewhere.wav"})
    again = split_data(screen(utts).kept, (0.8, 0.2, 0.0), seed=0, given={"test": screen([copy]).kept})
    assert again.dropped_same_audio == 1 and utts[1].id not in {u.id for u in again.parts["train"]}


def test_a_held_out_set_that_is_the_training_data_is_refused():
    from lora.data.prepare import split_data

    utts = screen(_utts(speakers=1, per=6)).kept
    with pytest.raises(DataError, match="no training utterances left: .* held-out audio"):
        split_data(utts, (0.8, 0.2, 0.0), given={"test": utts, "validation": utts[:1]})


def test_screening_into_a_store_keeps_no_audio_in_memory_and_reads_back_exactly(tmp_path):
    import numpy as np

    from lora.data.store import AudioStore, StoredAudio

    pcm = (np.arange(-16000, 16000, 2, dtype=np.int32).astype(np.float32) / 32768).astype(np.float32)  # PCM-16 values
    utts = [Utterance("a", tone(1.2), "one", "s"), Utterance("b", pcm, "two", "s"),
            Utterance("z", tone(1.0, amp=0.0), "x", "s")]
    with AudioStore(tmp_path) as store:
        kept = screen(utts, store=store).kept
        assert [u.id for u in kept] == ["a", "b"] and all(isinstance(u.samples, StoredAudio) for u in kept)
        assert np.array_equal(kept[1].audio, pcm) and kept[1].duration == pcm.size / 16000
        assert np.abs(kept[0].audio - tone(1.2)).max() <= 0.5 / 32768 + 1e-9  # rounded to the nearest PCM-16 step
        assert store.bytes == 2 * (tone(1.2).size + pcm.size)
        path = store.path
    assert not path.exists()
