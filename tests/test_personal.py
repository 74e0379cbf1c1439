"""Your own recordings: one voice, your own sentences, your own test set."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.conftest import tone
from tests.test_cli import ACCEPTANCE_TIMEOUT, FULL_ACCEPTANCE, ROOT, acceptance_schedule, run


def _rows_only_audio_and_text(folder: Path, name: str, clips: list[tuple[str, Path]]) -> Path:
    """A manifest as a user writes one: nothing but "audio" and "text" (no speaker, no id)."""
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"audio": str(wav), "text": text}) + "\n" for text, wav in clips))
    return path


@pytest.mark.slow
def test_one_voice_manifest_with_own_test_set_trains_by_utterance_and_verifies(tmp_path, tiny_dir):
    from lora.data.audio import write_wav

    clips = []
    for i in range(16):
        write_wav(tmp_path / f"c{i}.wav", tone(0.8 + 0.05 * i, 150 + 23 * i))
        clips.append((f"my phrase number {i}", tmp_path / f"c{i}.wav"))
    train = _rows_only_audio_and_text(tmp_path, "train", clips[:12] + [clips[13]])  # c13 is also in the test set
    test = _rows_only_audio_and_text(tmp_path, "test", clips[12:])
    out = tmp_path / "run"
    proc = run("-m", "lora.runners.real_small", "--preset", "personal", "--model", str(tiny_dir), "--source",
               f"manifest:{train}", "--test-source", f"manifest:{test}", "--output-dir", str(out), "--max-steps", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "split: by utterance (auto: 1 speaker for 2 parts, too few to keep voices apart)" in proc.stdout
    split = json.loads((out / "split.json").read_text())
    assert split["mode"] == "utterance" and split["given"] == ["test"] and split["dropped_same_audio"] == 1
    assert {r["id"] for r in map(json.loads, (out / "heldout_manifest.jsonl").read_text().splitlines())} == \
        {f"c{i}" for i in range(12, 16)}
    m = json.loads((out / "real_metrics.json").read_text())
    assert (m["data"]["split_mode"] == "utterance"
            and m["data"]["held_out_sources"]["test"]["source"] == f"manifest:{test}")
    assert m["schedule_scaled"] == {"max_steps": 4, "eval_every": 1, "warmup_steps": 1, "save_every": 1,
                                    "average_steps": 1}
    ver = run("-m", "lora.scripts.verify_run", str(out), "--relaxed")
    assert ver.returncode == 0, ver.stdout + ver.stderr
    assert "split by utterance" in ver.stdout and "the same voices are in training and test" in ver.stdout
    rep = run("-m", "lora.scripts.report", str(out), "--output", str(tmp_path / "r.md"))
    assert rep.returncode == 0, rep.stderr
    assert "measure adaptation to those voices, not generalization to new speakers" in (tmp_path / "r.md").read_text()


def test_build_manifest_takes_a_folder_of_recordings(tmp_path):
    from lora.data.audio import write_wav

    (tmp_path / "mine").mkdir()
    for i in range(6):
        write_wav(tmp_path / "mine" / f"{i}.wav", tone(1.0, 200 + 40 * i))
        (tmp_path / "mine" / f"{i}.txt").write_text(f"clip {i}")
    proc = run("-m", "lora.scripts.build_manifest", "--source", f"folder:{tmp_path / 'mine'}", "--part", "all",
               "--output", str(tmp_path / "m.jsonl"))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert sorted(r["text"] for r in rows) == [f"clip {i}" for i in range(6)]


@pytest.mark.acceptance
@pytest.mark.offline_model
@pytest.mark.espeak
def test_personal_preset_learns_a_vocabulary_on_held_out_sentences(tmp_path):
    """The acceptance: ~120 clips of one voice reading DevOps jargon; new sentences with the same jargon.

    Rows have only audio and text. The tuned WER must be at least 50% lower (relative) than the
    baseline, the canaries (speech not tuned for: recorded telephone prompts when installed,
    synthesized voices not in training) within +10% relative of the base model's, no words added
    on clips without speech, and the whole run within 10 minutes on a 2-core CPU (checked for the whole preset,
    MOONSHINE_LORA_ACCEPTANCE=full, when the test has the machine to itself: CI's parallel workers share it). CI's
    run stops at step 60 of the preset's 264 (docs/personal.md measures both).
    """
    folders = {}
    for part in ("train", "test"):
        folders[part] = tmp_path / part
        proc = run("-m", "lora.scripts.synth_corpus", "--sentences", str(ROOT / "examples" / "devops" / f"{part}.txt"),
                   "--voice", "en-us", "--output", str(folders[part]))
        assert proc.returncode == 0, proc.stderr
    manifests = {p: _rows_only_audio_and_text(f, "clips", [(w.with_suffix(".txt").read_text().strip(), w)
                                                           for w in sorted(f.glob("*.wav"))])
                 for p, f in folders.items()}
    out = tmp_path / "run"
    t0 = time.time()
    proc = run("-m", "lora.runners.real_small", "--preset", "personal", "--model", "offline", "--source",
               f"manifest:{manifests['train']}", "--test-source", f"manifest:{manifests['test']}",
               "--terms", str(ROOT / "examples" / "devops" / "terms.txt"), "--output-dir", str(out),
               *acceptance_schedule(60, 30), timeout=ACCEPTANCE_TIMEOUT)
    seconds = time.time() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "real_metrics.json").read_text())
    b, t = m["baseline"]["wer"], m["tuned"]["wer"]
    print(f"personal preset: WER {b:.2%} -> {t:.2%} on {m['tuned']['utterances']} held-out sentences, {seconds:.0f} s")
    assert m["data"]["split_mode"] == "utterance" and m["data"]["synthesized"] is True
    assert m["data"]["split"]["train"]["utterances"] >= 100
    assert t <= 0.5 * b, (b, t)
    # the terms (--terms): found more often on the new sentences, and the other words not worse
    terms = m["terms"]
    print(f"terms: recall {terms['baseline']['recall']:.1%} -> {terms['tuned']['recall']:.1%}, other words' WER "
          f"{terms['baseline']['other_wer']:.2%} -> {terms['tuned']['other_wer']:.2%}")
    assert not terms["absent_from_test"] and terms["tuned"]["found"] > terms["baseline"]["found"], terms
    assert terms["tuned"]["other_wer"] < terms["baseline"]["other_wer"], terms
    if FULL_ACCEPTANCE and not os.environ.get("PYTEST_XDIST_WORKER"):  # the whole preset with the machine to itself
        assert seconds < 600
    # both folders name their clips 0000.wav..: verify_run's overlap check compares audio, not those names
    from lora.scripts.verify_run import _disjoint

    disjoint, why = _disjoint(out)
    assert disjoint and "held-out clip names also name other audio in training" in why, why
    # ... and what it cost (issue 19): speech it was not tuned for within +10% relative WER, no words from silence
    cost = m["cost"]
    measured = {n: c for n, c in cost["canaries"].items() if not c["skipped"]}
    print("cost: " + "; ".join(f"{n} {c['baseline']['wer']:.2%} -> {c['tuned']['wer']:.2%}"
                               for n, c in measured.items()))
    assert "synth-general" in measured and m["general"]["replay"]["clips"] > 100
    if Path("/usr/share/asterisk/sounds/en_US_f_Allison").is_dir():
        assert measured["recorded-prompts"]["recorded"] and measured["recorded-prompts"]["gated"]
    assert cost["judged"] >= 1 and cost["quiet"]["added_words"] == 0
    # The canaries the guardrail watched (a validation slice) stay within the bound. recorded-readings is too small
    # to give the guardrail a slice: measured on this command without Debian's prompts it rose 1.53% -> 4.58% (2 -> 6
    # errors in 131 words, BEYOND; docs/canaries.md), the open part of issue 39. Where it is beyond, the run must say
    # so and name the way out, and an explicit --accept-cost must be the only way past it.
    watched = {n: c for n, c in measured.items() if m["general"]["canaries"][n]["validation_clips"]}
    assert watched and all(c["within_bound"] for c in watched.values() if c["gated"]), watched
    beyond = sorted(n for n, c in measured.items() if c["gated"] and not c["within_bound"])
    assert set(beyond) <= {"recorded-readings"}, beyond
    # verify_run's canary check in-process (the whole command once, below: its artifact test is two fresh processes)
    from lora.scripts.verify_run import _canaries

    within, line, culprits = _canaries(m)
    assert within == (not beyond) and sorted(culprits) == beyond, (line, beyond)
    if beyond:
        assert "recorded-readings: fix: rerun with" in line, line
    ver = run("-m", "lora.scripts.verify_run", str(out), *(["--accept-cost", "recorded-readings"] if beyond else []))
    assert ver.returncode == 0, ver.stdout + ver.stderr
    if beyond:
        assert "ACCEPTED (--accept-cost recorded-readings)" in ver.stdout, ver.stdout
