"""The studio's first pieces: the prompt plan (held-out whole sentences, every term held out) and the takes (checked
at once, saved as the folder corpus the job reads, resumable)."""

from __future__ import annotations

import numpy as np
import pytest

from lora.errors import DataError
from lora.studio.plan import TEST, TRAIN, plan_prompts, read_sentences
from lora.studio.takes import check_take, next_prompt, recorded, save_take, take_path

SR = 16000
SENTENCES = [f"Sentence number {i} about the weather." for i in range(8)] + [
    "Restart the kubectl pod before noon.", "The kubectl logs were empty.", "Redis keeps the session cache.",
    "We moved Redis to the new host.", "Ask Kafka for the offsets."]
TERMS = ["kubectl", "Redis", "Kafka"]


def _uses(text: str, term: str) -> bool:
    return term.lower() in text.lower()


def test_every_term_is_held_out_and_kept_in_training_where_the_sentences_allow():
    plan = plan_prompts(SENTENCES, TERMS, test_share=0.25, seed=3)
    test, train = plan.part(TEST), plan.part(TRAIN)
    for term in TERMS:
        assert any(_uses(p.text, term) for p in test), term
    assert any(_uses(p.text, "kubectl") for p in train) and any(_uses(p.text, "Redis") for p in train)
    assert plan.trained_once == ["Kafka"]  # one sentence uses it: held out, and the plan says so
    assert "only held out, in no training sentence: Kafka" in plan.summary()
    assert len(test) == round(len(SENTENCES) * 0.25) and {p.text for p in test}.isdisjoint({p.text for p in train})
    assert plan == plan_prompts(SENTENCES, TERMS, test_share=0.25, seed=3)  # seeded
    assert plan != plan_prompts(SENTENCES, TERMS, test_share=0.25, seed=4)


def test_general_sentences_are_mixed_into_training_only():
    plan = plan_prompts(SENTENCES, general=["The quick brown fox jumps over the lazy dog."])
    assert [(p.id, p.part, p.source) for p in plan.prompts if p.source == "general"] == [("g001", TRAIN, "general")]
    assert plan.from_dict(plan.to_dict()) == plan


def test_a_plan_that_cannot_be_made_is_refused_in_one_line(tmp_path):
    with pytest.raises(DataError, match="at least 5"):
        plan_prompts(SENTENCES[:3])
    with pytest.raises(DataError, match="no sentence uses the terms Postgres"):
        plan_prompts(SENTENCES, ["Postgres"])
    f = tmp_path / "prompts.txt"
    f.write_text("# my prompts\nHello there.\n\nhello, there!\n")
    with pytest.raises(DataError, match="lines 2 and 4: the same sentence twice"):
        read_sentences(f)
    f.write_text("One.  # a comment\nTwo.\n")
    assert read_sentences(f) == ["One.", "Two."]


def _take(lead: float = 0.3, speech: float = 1.5, tail: float = 0.3, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(speech * SR)) / SR
    voiced = (amp * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return np.concatenate([np.zeros(int(lead * SR), np.float32), voiced, np.zeros(int(tail * SR), np.float32)])


@pytest.mark.parametrize("audio, reason", [
    (_take(), None),
    (np.zeros(2 * SR, np.float32), "silent"),
    (_take() * 0.001, "silent"),
    (np.clip(_take(amp=1.5), -1, 1), "clipped"),
    (_take(speech=0.4, lead=0.1, tail=0.1), "too short"),
    (_take(speech=22), "too long"),
    (_take(lead=0.0), "speech at the very start"),
    (_take(tail=0.0), "speech at the very end"),
])
def test_each_take_is_checked_at_once_with_a_reason_a_person_can_act_on(audio, reason):
    got = check_take(audio)
    assert (got is None) if reason is None else (got is not None and got.startswith(reason)), got


@pytest.mark.espeak
def test_real_speech_passes_and_speech_cut_at_the_end_is_refused(espeak_clips):
    pad = np.zeros(int(0.3 * SR), np.float32)
    for _, audio in espeak_clips:
        assert check_take(np.concatenate([pad, audio, pad])) is None
        assert check_take(np.concatenate([pad, audio[: audio.size // 2]])).startswith("speech at the very end")


def test_takes_are_the_folder_corpus_the_job_reads_and_recording_resumes(tmp_path):
    from lora.data.sources import read_folder

    plan = plan_prompts(SENTENCES, TERMS, seed=0)
    assert next_prompt(tmp_path, plan) == plan.prompts[0]
    assert save_take(tmp_path, plan.prompts[0], np.zeros(2 * SR, np.float32)).startswith("silent")
    assert not take_path(tmp_path, plan.prompts[0]).exists()  # nothing of a refused take is written
    for p in plan.prompts[:4]:
        assert save_take(tmp_path, p, _take()) is None
    assert recorded(tmp_path, plan) == [p.id for p in plan.prompts[:4]]
    assert next_prompt(tmp_path, plan) == plan.prompts[4]  # resumes where the user stopped
    for p in plan.prompts[4:]:
        assert save_take(tmp_path, p, _take()) is None
    assert next_prompt(tmp_path, plan) is None
    for part in (TRAIN, TEST):
        utts = list(read_folder(tmp_path / "recordings" / part))
        assert sorted(u.text for u in utts) == sorted(p.text for p in plan.part(part))
        assert all(u.audio.size == _take().size for u in utts)
    assert not list(tmp_path.rglob(".tmp-*"))


def test_a_name_from_outside_the_plan_is_never_a_path(tmp_path):
    from lora.studio.plan import Prompt

    for bad in (Prompt("../../etc/passwd", "x", TRAIN), Prompt("p001", "x", "../elsewhere"), Prompt("p1/x", "x", TEST)):
        with pytest.raises(ValueError, match="not a planned prompt"):
            take_path(tmp_path, bad)


def test_review_marks_each_word_error_and_filters_by_what_changed(tmp_path):
    import json

    from lora.studio.review import _diff, clips, table_html

    assert _diff("the cat sat", "the dog sat down") == "the <b>dog</b> <del>cat</del> sat <ins>down</ins>"
    assert _diff("the cat sat", "the sat") == "the <del>cat</del> sat"
    run = tmp_path / "run"
    run.mkdir()
    rows = [("a", "the cat sat", "the cat sat", "the dog sat"), ("b", "hello there", "hello", "hello there")]
    def write(name, row):
        (run / name).write_text("".join(json.dumps(row(r)) + "\n" for r in rows))

    write("heldout_manifest.jsonl", lambda r: {"id": r[0], "audio": f"audio/{r[0]}.wav", "text": r[1]})
    write("predictions_baseline.jsonl", lambda r: {"id": r[0], "reference": r[1], "prediction": r[2]})
    write("predictions_tuned.jsonl", lambda r: {"id": r[0], "reference": r[1], "prediction": r[3]})
    got = {c["id"]: c for c in clips(run)}
    assert got["a"]["change"] > 0 and got["b"]["change"] < 0 and got["b"]["audio"] == run / "audio" / "b.wav"
    worse, better = table_html(list(got.values()), "worse"), table_html(list(got.values()), "better")
    assert "<td>a</td>" in worse and "<td>b</td>" not in worse and "<td>b</td>" in better
    assert "1 of 2 held-out clips" in worse


def test_a_job_still_running_when_the_studio_stops_is_stopped_with_it(tmp_path):
    from lora.studio.tune import Tuning

    class Sleeping(Tuning):
        def command(self):
            return ["python", "-c", "import time; time.sleep(60)"]

    tuning = Sleeping(tmp_path)
    assert tuning.start().startswith("Started") and tuning.running()
    assert tuning.start() == "Tuning is already running."
    tuning.close()
    assert tuning.proc.poll() is not None and not tuning.running()
    assert tuning.status().startswith("**stopped")
