"""What tuning costs: canary overlap checks and draws, quiet clips, regression, replay batches, the guardrail."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lora.config import RunConfig, build_config
from lora.data.general import (
    General,
    SpeechSet,
    drop_overlap,
    parse_canary,
    prepare_general,
    quiet_clips,
    regression,
    split_canary,
)
from lora.data.sources import Utterance
from lora.errors import DataError, LoraError
from tests.conftest import tone


def _u(uid: str, text: str, speaker: str = "s", freq: float = 200.0) -> Utterance:
    audio = tone(0.6, freq)
    return Utterance(uid, audio, text, speaker, {"fingerprint": f"fp-{freq}", "path": f"/data/{uid}.wav"})


def test_canary_clips_that_are_run_clips_or_trained_sentences_are_dropped_and_counted():
    train = [_u("t1", "open the pod bay doors", freq=100), _u("t2", "close them", freq=110)]
    canary = [_u("c1", "Open the pod bay doors!", freq=300),  # a trained sentence, other audio
              _u("c2", "a new sentence", freq=100),  # the same audio as a training clip
              _u("c3", "something else entirely", freq=320)]
    kept, dropped = drop_overlap(canary, train, train, "sentence trained on")
    assert [u.id for u in kept] == ["c3"]
    assert dropped == {"sentence trained on": 1, "same audio as a run clip": 1}


def test_canary_draw_is_seeded_and_keeps_sentences_on_one_side():
    utts = [_u(f"c{i:02d}", f"sentence {i // 2}", freq=100 + i) for i in range(60)]  # two clips per sentence
    val, test = split_canary("x", utts, clips=20, seed=0)
    assert (val, test) == split_canary("x", utts, clips=20, seed=0)
    assert 12 <= len(val) <= 16 and 20 <= len(test) <= 21
    assert not {u.text for u in val} & {u.text for u in test}
    assert split_canary("x", utts, 20, seed=1) != (val, test)


def test_prepare_general_checks_canaries_and_replay_against_the_run(tmp_path):
    run = {"train": [_u("t1", "trained words", freq=100)], "validation": [_u("v1", "validation words", freq=101)],
           "test": [_u("x1", "test words", freq=102)]}
    general_speech = [_u(f"g{i}", f"general sentence {i}", speaker=str(101 + i % 10), freq=400 + i) for i in range(80)]
    general_speech.append(_u("g-test", "test words", speaker="101", freq=999))  # a held-out sentence

    def load(spec, n):
        from lora.data.sources import SourceInfo

        if spec == "bad:":
            raise DataError("manifest not found: nope.jsonl")
        return SourceInfo(spec, "synth", True, "synthesized speech"), list(general_speech)

    g = prepare_general(["general=synth:x"], "synth:x", 16, 0, run, load, str.lower, log=lambda m: None)
    canary = g.canaries[0]
    assert canary.dropped == {"sentence trained on": 0} or canary.dropped == {}
    assert len(canary.test) == 16 and canary.val
    measured = {u.id for u in canary.test + canary.val}
    assert not measured & {u.id for u in g.replay.test}, "replay never trains on a canary clip"
    assert "g-test" not in {u.id for u in g.replay.test}, "nor on a held-out sentence"
    assert sum(g.replay.dropped.values()) >= len(measured) + 1
    assert all(u.text == u.text.lower() for u in g.replay.test), "replay text follows the run's text mode"
    same = prepare_general(["general=synth:x"], "", 16, 0, {**run, "train": [_u("t2", "words", speaker="101")]}, load,
                           str.lower, log=lambda m: None, source="synth:x")
    assert same.canaries[0].dropped["voice trained on"] == 9  # a canary from the run's own source: new voices only
    assert "101" not in {u.speaker for u in same.canaries[0].test + same.canaries[0].val}
    with pytest.raises(DataError, match=r"^--canary calls \(bad:\): manifest not found"):
        prepare_general(["calls=bad:"], "", 16, 0, run, load, str.lower, log=lambda m: None)
    with pytest.raises(DataError, match="NAME=SPEC"):
        parse_canary("folder:/x")


def test_quiet_clips_are_deterministic_and_at_their_levels():
    a, b = quiet_clips(), quiet_clips()
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not a["silence"].any()
    for name, clip in a.items():
        if "dBFS" in name:
            level = float(name.rsplit("-", 1)[1].removesuffix("dBFS"))
            rms = 20 * np.log10(np.sqrt(np.mean(clip.astype(np.float64) ** 2)))
            assert rms == pytest.approx(-level, abs=0.5), name


def test_regression_is_relative_with_a_floor_for_easy_sets():
    assert regression(0.20, 0.22) == pytest.approx(0.10)
    assert regression(0.20, 0.18) == pytest.approx(-0.10)
    assert regression(0.0, 0.01) == pytest.approx(0.2)  # 1 point on a perfect set: against the 5% floor


def test_replay_flags_are_checked():
    assert build_config("personal").replay == "default"
    assert build_config("personal", replay="none").replay == ""
    with pytest.raises(LoraError, match="needs --replay"):
        build_config("none", replay_ratio=0.25)
    with pytest.raises(LoraError, match="no replay clip in a batch of 1"):
        build_config("none", replay="synth:x", replay_ratio=0.25, batch_size=1)


def _loop(tiny_pair, tmp_path, clips=(), guard=None, quiet=(), **kw):
    from lora.evaluation.evaluate import EvalContext
    from lora.model.adapter import attach_lora, target_regex
    from lora.model.seed import seed_everything
    from lora.training.loop import train

    model, processor = tiny_pair
    seed_everything(0)
    model = attach_lora(model, 8, 16, 0.0, target_regex(model, "both"))
    data = [Utterance(f"u{i}", tone(1.0, 200 + 40 * i), t, "s") for i, t in enumerate(["one two", "three four",
                                                                                       "five six", "seven eight"])]
    cfg = RunConfig(max_steps=8, warmup_steps=1, eval_every=4, batch_size=4, grad_accum=1, learning_rate=5e-3,
                    patience=0, **kw)
    return train(model, EvalContext(processor, "cpu"), data, data, cfg, tmp_path / "log.jsonl", replay=clips,
                 quiet=quiet, guard=guard), model


def test_replay_fills_its_share_of_every_batch(tiny, tmp_path, monkeypatch):
    import lora.training.loop as T

    seen = []
    real = T.BatchLoader.submit
    monkeypatch.setattr(T.BatchLoader, "submit", lambda self, micro: (
        seen.append([[self.clips[i].id for i in idx] for idx in micro]), real(self, micro))[1])
    replay = [Utterance(f"r{i}", tone(0.8, 500 + 20 * i), f"replay {i}", "g") for i in range(3)]
    _loop(tiny, tmp_path, clips=replay, replay="synth:x", replay_ratio=0.25)
    assert len(seen) == 8
    for (batch,) in seen:
        assert sum(i.startswith("r") for i in batch) == 1 and 2 <= len(batch) <= 4  # 4 own clips in batches of 3
    assert {i for (b,) in seen for i in b if i.startswith("r")} == {"r0", "r1", "r2"}


def test_quiet_clips_fill_their_share_with_an_empty_target(tiny, tmp_path, monkeypatch):
    """--quiet-ratio puts clips without speech into every batch beside replay, each with the end of text as its
    only target token: what the model learns there is to write nothing."""
    import lora.training.loop as T
    from lora.data.general import quiet_set

    seen, labels = [], []
    real = T.BatchLoader.submit
    monkeypatch.setattr(T.BatchLoader, "submit", lambda self, micro: (
        seen.append([[self.clips[i].id for i in idx] for idx in micro]), real(self, micro))[1])
    real_prepare = T.BatchLoader.prepare
    monkeypatch.setattr(T.BatchLoader, "prepare", lambda self, idx: (
        labels.extend((self.clips[i].id, self.labels[i]) for i in idx), real_prepare(self, idx))[1])
    replay = [Utterance(f"r{i}", tone(0.8, 500 + 20 * i), f"replay {i}", "g") for i in range(3)]
    quiet = quiet_set("train", 3, seed=0)
    _loop(tiny, tmp_path, clips=replay, quiet=quiet, replay="synth:x", replay_ratio=0.25, quiet_ratio=0.25)
    for (batch,) in seen:
        assert sum(i.startswith("r") for i in batch) == 1 and sum(i.startswith("quiet-") for i in batch) == 1
        assert 3 <= len(batch) <= 4  # 4 own clips in batches of 2
    assert {i for (b,) in seen for i in b if i.startswith("quiet-")} == {u.id for u in quiet}
    eos = tiny[1].tokenizer.eos_token_id
    assert {tuple(lab) for i, lab in labels if i.startswith("quiet-")} == {(eos,)}


class _Guard:
    """A guardrail where one canary's WER rises after step 0 while another's falls (the gain must not hide it)."""

    bound = 0.10
    clips = [1]

    def __init__(self):
        self.calls = 0

    def __bool__(self):
        return True

    def measure(self, model):
        self.calls += 1
        wer = {"calls": 0.20 if self.calls == 1 else 0.30, "general": 0.5 if self.calls == 1 else 0.1}
        return {"canary_wer": wer, "canary_clip_errors": {n: [round(100 * w)] for n, w in wer.items()}}  # 100 words

    def within(self, base, now):
        base, now = base["canary_clip_errors"], now["canary_clip_errors"]
        return all(regression(base[n][0] / 100, now[n][0] / 100) <= self.bound for n in base)


def test_guardrail_keeps_no_checkpoint_beyond_the_bound(tiny, tiny_dir, tmp_path):
    import torch
    from peft import get_peft_model_state_dict

    from lora.model.adapter import attach_lora, target_regex
    from lora.model.load import load_model, load_processor
    from lora.model.seed import seed_everything

    seed_everything(0)  # the adapter _loop starts from: same model, same seed
    base = load_model(str(tiny_dir))
    untouched = attach_lora(base, 8, 16, 0.0, target_regex(base, "both"))
    result, tuned = _loop(tiny, tmp_path, guard=_Guard())
    assert result.best_step == 0, "every trained check raised one canary's WER by 50%: the untouched model is kept"
    kept, initial = get_peft_model_state_dict(tuned), get_peft_model_state_dict(untouched)
    assert all(torch.equal(kept[k], initial[k]) for k in initial), "the kept adapter is the one before training"
    assert [e["within_bound"] for e in result.evals[1:]] == [False, False]
    rows = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert rows[3]["canary_wer"] == {"calls": 0.30, "general": 0.1} and rows[3]["within_bound"] is False
    fresh = load_model(str(tiny_dir)), load_processor(str(tiny_dir))
    free, _ = _loop(fresh, tmp_path)  # the same run without a guard keeps a trained checkpoint
    assert free.best_step > 0


def test_guardrail_transcribes_only_the_checks_that_could_be_kept(tiny, tmp_path, monkeypatch):
    """A check whose loss is not the lowest so far cannot be kept, whatever its canaries show: the guard does not
    transcribe them there (on a 2-core CPU that is ~8 s a check)."""
    import lora.training.loop as T

    losses = iter([1.0, 1.2, 0.5])  # step 0, step 4 (worse), step 8 (best)
    monkeypatch.setattr(T, "eval_loss", lambda *a, **k: next(losses))
    guard = _Guard()
    guard.within = lambda base, now: True
    result, _ = _loop(tiny, tmp_path, guard=guard)
    assert guard.calls == 2 and result.best_step == 8
    assert [("canary_wer" in e, e.get("within_bound")) for e in result.evals] == [(True, None), (False, None),
                                                                               (True, True)]


def test_guard_vetoes_a_check_only_when_the_slice_shows_the_regression(monkeypatch):
    """The guardrail judges a canary's validation slice as verify_run judges its test part: on a slice of 23 short
    prompts (59 words) one word more is +20% by the point estimate, which alone vetoed every check of a real run
    (docs/recorded.md, the GSM prompts with --seed 1)."""
    import lora.evaluation.cost as C
    import lora.evaluation.evaluate as E

    words = [1] * 17 + [3, 4, 5, 6, 8, 16]  # 23 telephone prompts, 59 words
    slice_ = [Utterance(f"c{i}", tone(0.5), " ".join(["word"] * n), "s") for i, n in enumerate(words)]
    guard = C.Guard(General([SpeechSet("calls", "folder:/c", "d", True, [_u("t", "x")], val=slice_)], None),
                    E.EvalContext(None, "cpu", 8), 0.10)
    assert guard.words == {"calls": words}
    base = [0] * 23
    for i in (0, 1, 2, 18, 22):
        base[i] = 1  # 5 errors: 8.5%
    one_more = list(base)
    one_more[5] = 1  # 6 errors: 10.2%, +20% by the point estimate
    def row(errors):
        return {"canary_clip_errors": {"calls": errors}}

    assert regression(5 / 59, 6 / 59) > 0.10 and guard.within(row(base), row(one_more))
    many_more = [e + 1 for e in base]  # a word more on every clip: 28 errors, +460%
    assert not guard.within(row(base), row(many_more))
    with pytest.raises(LoraError, match="canary slices or quiet clips differ from those of this run's step 0"):
        guard.within({"canary_clip_errors": {}}, row(base))  # resumed with other canaries (or an older version)
    monkeypatch.setattr(C, "transcribe", lambda model, ctx, clips, **k: ["word"] * len(clips.sizes))
    measured = guard.measure(object())
    assert measured == {"canary_wer": {"calls": pytest.approx(36 / 59)},
                        "canary_clip_errors": {"calls": [n - 1 for n in words]}}


def test_guard_refuses_a_check_that_writes_words_on_a_quiet_clip(monkeypatch):
    """Words on a clip without speech where the untouched model wrote none veto a check, whatever the canaries say;
    a clip the untouched model already wrote on does not (that is not what tuning cost). With no canary at all the
    quiet clips still guard the run."""
    import lora.evaluation.cost as C
    import lora.evaluation.evaluate as E
    from lora.data.general import QUIET_GUARD_CLIPS, quiet_clips, quiet_set

    quiet = quiet_set("guard", QUIET_GUARD_CLIPS, seed=0)
    assert all(u.text == "" and u.extra["quiet"] for u in quiet) and len({u.id for u in quiet}) == len(quiet)
    reported = {v.tobytes() for v in quiet_clips().values()}
    assert not reported & {u.audio.tobytes() for u in quiet + quiet_set("train", 32, seed=0)}, \
        "the guard and training draws are never the clips the run reports"
    seeds = [[u.audio.tobytes() for u in quiet_set("guard", 4, seed)] for seed in (0, 1)]
    assert seeds[0] != seeds[1]
    guard = C.Guard(General([], None), E.EvalContext(None, "cpu", 8), 0.10, quiet=quiet)
    assert guard, "clips without speech alone make a guard"
    step0 = {"canary_clip_errors": {}, "quiet_words": [0] * 7 + [2]}
    assert guard.within(step0, {"canary_clip_errors": {}, "quiet_words": [0] * 7 + [5]})
    assert not guard.within(step0, {"canary_clip_errors": {}, "quiet_words": [1] + [0] * 6 + [2]})
    monkeypatch.setattr(C, "transcribe", lambda model, ctx, clips, **k: ["", "You"] * (len(clips.sizes) // 2))
    assert guard.measure(object()) == {"canary_wer": {}, "canary_clip_errors": {}, "quiet_words": [0, 1] * 4}


def test_general_summary_names_what_each_set_is():
    s = SpeechSet("calls", "folder:/c", "recorded speech, 1 voice", True, [_u("a", "x")], dropped={"same audio": 2})
    summary = General([s], None).summary()
    assert (summary["canaries"]["calls"]["recorded"] is True
            and summary["canaries"]["calls"]["dropped"] == {"same audio": 2})


def test_a_canary_fails_only_when_its_clips_show_the_regression():
    """Three more words on 64 short clips (the offline main job on the recorded prompts: 12 -> 15 errors in 187
    words, +25%) is within noise; the same +25% on every clip of a large canary is beyond the bound."""
    from lora.evaluation.cost import regression_low

    words = [3] * 62 + [2] * 2
    base = [1 if i % 5 == 0 else 0 for i in range(64)]
    small = {"clip_errors": base, "clip_words": words}
    assert regression_low(small, {"clip_errors": [e + (i in (3, 7, 11)) for i, e in enumerate(base)]}) < 0.10
    big_words = [20] * 400
    big_base = [2] * 400
    assert regression_low({"clip_errors": big_base, "clip_words": big_words},
                          {"clip_errors": [3 if i % 2 else 2 for i in range(400)]}) > 0.10


def test_the_runs_summary_line_names_the_worst_judged_canary_and_its_verdict():
    from lora.runners.real_small import _worst_canary

    def canary(reg, low, gated=True, within=True):
        return {"recorded": True, "skipped": False, "gated": gated, "within_bound": within, "regression": reg,
                "regression_low": low, "baseline": {"words": 9}}

    cost = {"max_regression": 0.1, "within_bound": True,
            "canaries": {"prompts": canary(0.25, -0.39), "small": canary(0.9, 0.9, gated=False),
                         "other": canary(0.0, 0.0)}}
    line = _worst_canary(cost)
    assert line.startswith("worst canary prompts (recorded) +25.0% relative WER (within: the clips support at least")
    assert line.endswith("all 2 judged canaries within --max-regression 0.1")
    cost["canaries"]["other"] = canary(0.2, 0.15, within=False)  # one of two beyond: named, not "all"
    assert _worst_canary(cost).endswith("1 of 2 judged canaries BEYOND (other) --max-regression 0.1")
    cost["canaries"] = {"small": canary(0.9, 0.9, gated=False)}
    assert _worst_canary(cost) == "no canary large enough to judge"


def test_words_needed_to_see_the_bound_and_the_unguarded_line():
    """A +10% rise at the recorded prompts' 6.42% base WER needs 422 words before it stands out of its own noise
    (2.7 new errors); at the 5% floor 542. A run whose recorded canaries hold fewer says it is unguarded, naming what
    to add; one with enough says what it holds."""
    from lora.evaluation.cost import recorded_guard, recorded_line, words_to_see

    assert (words_to_see(0.10, 0.0642), words_to_see(0.10, 0.0), words_to_see(0.20, 0.10)) == (422, 542, 136)

    def canary(words, errors, recorded=True, skipped=""):
        return {"recorded": recorded, "skipped": skipped,
                "baseline": {"words": words, "clip_errors": [errors] + [0] * 9}}

    few = recorded_guard({"readings": canary(131, 2), "synth": canary(900, 300, recorded=False),
                          "gone": canary(0, 0, skipped="3 clips left")}, 0.10)
    assert few == {"canaries": ["readings"], "words": 131, "base_wer": 2 / 131, "words_needed": 542, "enough": False}
    line = recorded_line(few, 0.10)
    assert line.startswith("UNGUARDED ON RECORDED SPEECH: the canaries hold 131 words of recorded speech (readings)")
    assert "needs 542 words" in line and "--canary NAME=SPEC" in line
    none = recorded_guard({"synth": canary(900, 300, recorded=False)}, 0.10)
    assert not none["enough"] and "hold 0 words of recorded speech;" in recorded_line(none, 0.10)
    enough = recorded_guard({"prompts": canary(600, 40), "readings": canary(131, 2)}, 0.10)
    assert enough["enough"] and enough["words_needed"] == words_to_see(0.10, 42 / 731)
    assert not recorded_line(enough, 0.10).startswith("UNGUARDED")


def test_canary_test_part_is_drawn_until_it_holds_the_words():
    """--canary-words: short prompts are drawn until the test part holds the words a +10% rise needs, not a fixed
    number of clips; the guardrail's slice comes first, up to GUARD_WORDS words (a quarter of the canary)."""
    from lora.data.general import GUARD_WORDS

    utts = [_u(f"c{i:03d}", f"prompt {i} " + "word " * (i % 3), freq=100 + i) for i in range(400)]  # 2-4 words
    val, test = split_canary("p", utts, clips=64, seed=0, words=550)
    assert sum(len(u.text.split()) for u in test) >= 550 and len(test) > 64
    target = min(GUARD_WORDS, sum(len(u.text.split()) for u in utts) // 4)
    assert target <= sum(len(u.text.split()) for u in val) < target + 4
    assert split_canary("p", utts, clips=64, seed=0, words=0)[1] != test
    assert len(split_canary("p", utts, clips=64, seed=0, words=0)[1]) == 64
    small = utts[:10]  # fewer than 2 x MIN_CLIPS: no slice, everything measured
    assert split_canary("p", small, clips=64, seed=0, words=550) == ([], sorted(small, key=lambda u: u.id))


def _metrics(quiet_added=0, beyond=(), quiet_ratio=0.0, replay=""):
    canaries = {n: {"recorded": True, "skipped": "", "gated": True, "within_bound": n not in beyond,
                    "regression": 0.3 if n in beyond else 0.0, "regression_low": 0.2 if n in beyond else -0.1,
                    "baseline": {"wer": 0.1, "words": 600}, "tuned": {"wer": 0.13 if n in beyond else 0.1}}
                for n in ("calls", "readings")}
    q = {"clips": {"silence": {}}, "added_words": quiet_added, "baseline_words": 0, "tuned_words": quiet_added,
         "clips_with_added_words": ["silence"] if quiet_added else []}
    return {"config": {"quiet_ratio": quiet_ratio, "replay": replay},
            "cost": {"max_regression": 0.1, "canaries": canaries, "quiet": q, "within_bound": not beyond}}


def test_a_failed_cost_check_names_the_fix_and_can_be_accepted_knowingly(tmp_path):
    """No dead end: verify_run's failing cost line says which flag to rerun with (what the run did not use) and
    how to ship it anyway; --accept-cost NAME passes that check as ACCEPTED, for the named cost only."""
    import json

    from lora.scripts import verify_run as V

    state = {"m": _metrics(quiet_added=1, beyond=("calls",))}
    plain = {name: check() for name, check in V._outcome_checks(state, relaxed=False)[1:3]}
    (ok_c, canaries), (ok_q, quiet) = plain.values()
    assert not ok_c and "calls: fix: rerun with --replay default --replay-ratio 0.25" in canaries
    assert "--accept-cost calls (recorded)" in canaries and "readings: fix" not in canaries
    assert not ok_q and "fix: rerun with --quiet-ratio 0.125" in quiet and "--accept-cost quiet" in quiet
    state["m"]["config"].update(quiet_ratio=0.125, replay="default")
    _, quiet_again = V._quiet(state["m"])[:2]
    assert "rerun with a larger --quiet-ratio" in quiet_again
    accepted = [check() for _, check in V._outcome_checks(state, relaxed=False, accept=["quiet"])[1:3]]
    assert accepted[0][0] is False and accepted[1][0] is True and accepted[1][1].startswith("ACCEPTED (--accept-cost")
    both = [check() for _, check in V._outcome_checks(state, relaxed=False, accept=["quiet", "calls"])[1:3]]
    assert all(ok for ok, _ in both)
    (tmp_path / "real_metrics.json").write_text(json.dumps(state["m"]))
    assert V.accepted_costs(tmp_path, ["calls", "quiet", "calls"]) == ["calls", "quiet"]
    with pytest.raises(LoraError, match="--accept-cost call: not a cost this run measured; valid: quiet, calls"):
        V.accepted_costs(tmp_path, ["call"])


def test_the_runtime_quiet_check_names_the_fix_or_records_the_accepted_cost():
    from lora.export.job import cost_checks

    cost = {"quiet_ratio": 0.0, "quiet": {"clips": {"silence": {}}, "added_words": 1, "baseline_words": 0,
                                          "tuned_words": 1, "clips_with_added_words": ["silence"]}}
    (failed,) = cost_checks(cost)
    assert not failed["passed"] and "fix: rerun with --quiet-ratio 0.125" in failed["detail"]
    (accepted,) = cost_checks(cost, accept=["quiet"])
    assert accepted["passed"] and "ACCEPTED (--accept-cost quiet, recorded in export.json)" in accepted["detail"]


def test_too_little_recorded_speech_is_a_warning_line_of_verify_run():
    from lora.evaluation.cost import recorded_guard
    from lora.scripts import verify_run as V

    m = _metrics()
    m["cost"]["recorded"] = recorded_guard({"r": {"recorded": True, "skipped": "",
                                                  "baseline": {"words": 131, "clip_errors": [2]}}}, 0.1)
    ok, line = V._recorded(m)
    assert ok is None and line.startswith("UNGUARDED ON RECORDED SPEECH")
    m["cost"]["recorded"] = recorded_guard({"r": {"recorded": True, "skipped": "",
                                                  "baseline": {"words": 900, "clip_errors": [60]}}}, 0.1)
    assert V._recorded(m)[0] is True


def test_training_quiet_clips_are_no_longer_than_the_users_median_clip():
    """A batch is padded to its longest clip: quiet clips drawn between the user's shortest and median clip seldom set
    a batch's length."""
    from lora.data.general import quiet_seconds, quiet_set

    own = [Utterance(f"u{i}", tone(s), "x", "s") for i, s in enumerate((2.0, 3.0, 3.5, 4.0, 9.0))]
    low, high = quiet_seconds(own)
    assert (low, high) == (2.0, 3.5)
    assert all(2.0 <= u.duration <= 3.5 for u in quiet_set("train", 32, 0, (low, high)))
