"""Speech the adapter is not tuned for: canaries (measured before and after) and replay (mixed into training).

A **canary** is a named set of clips (``--canary NAME=SPEC``, any source spec) measured with the
test set before and after tuning: what the adapter *cost* outside the user's own data. Its clips
are split once into a small validation slice, which the training loop's guardrail watches, and a
test part, which the run reports and ``verify_run`` judges. Without ``--canary`` a run measures
the defaults that exist offline (:func:`default_canaries`):

* ``recorded-prompts``: real recordings of one professional voice, telephone prompts over G.722
  (Debian's asterisk-core-sounds-en, imported by :mod:`lora.data.prompts`), when installed;
* ``recorded-readings``: the human readings in Moonshine's wheels (:mod:`lora.data.readings`: Pete Warden reading
  Dickens, 10 clips, from moonshine-voice; beckett.wav), recorded speech on every platform pip reaches;
* ``synth-general``: general sentences in espeak-ng voices never used for replay (synthesized);
* ``librispeech-test``: 64 LibriSpeech test.clean clips, only when the hub is reachable (recorded audiobooks).

**Replay** (``--replay SPEC``, ``--replay-ratio R``) is general speech mixed into every training
batch. ``--replay default`` is the synthesized corpus spoken by voices the ``synth-general``
canary never uses.

Nothing is measured on what it was trained on: a canary clip whose audio is a training, validation
or test clip, or whose sentence is trained on, is dropped and counted; a replay clip whose audio
or sentence is held out (validation, test or a canary) is dropped and counted.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from lora.config import parse_canary
from lora.data.sources import Utterance
from lora.data.text import sentence_key
from lora.errors import DataError

# The shipped synthesized corpus (lora.data.synth.VOICES) is shared out by voice: replay trains on the
# first five, the synth-general canary measures the other five (voices the adapter never heard).
REPLAY_VOICES = ("101", "102", "103", "104", "105")
CANARY_VOICES = ("106", "107", "108", "109", "110")
READINGS = "recorded-readings"  # the default canary of recorded speech that pip installs (lora.data.readings)
MIN_CLIPS = 8  # a canary with fewer clips left after the overlap checks is skipped, and the run says so
GUARD_WORDS = 300  # at most this many reference words of each canary form its validation slice (the guardrail's)
GATE_WORDS = 100  # a canary's test part needs this many reference words to be judged by --max-regression
WER_FLOOR = 0.05  # regression is relative to the base WER, or to 5% where the base WER is lower


@dataclass
class SpeechSet:
    """A canary or the replay set, after screening, overlap checks and the seeded draw."""

    name: str
    spec: str
    description: str
    recorded: bool
    test: list[Utterance]  # the replay set's clips are all here
    val: list[Utterance] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> clips
    skipped: str = ""  # why the set is not measured (too few clips left)

    def summary(self) -> dict:
        return {"spec": self.spec, "description": self.description, "recorded": self.recorded,
                "clips": len(self.test), "validation_clips": len(self.val),
                "hours": round(sum(u.duration for u in self.test + self.val) / 3600, 4),
                "speakers": len({u.speaker for u in self.test + self.val}), "dropped": self.dropped,
                "skipped": self.skipped}


@dataclass
class Candidate:
    """A set to load: its name, source spec, and which speakers of it to keep (None: all)."""

    name: str
    spec: str
    speakers: tuple[str, ...] | None = None
    n: int | None = None  # clips drawn from a streamed source


def default_canaries(log=print) -> list[Candidate]:
    from lora.data.prompts import all_prompts_manifest, default_recorded_corpus
    from lora.data.readings import readings_folder
    from lora.storage.cache import cache_root, hub_offline_reason

    out = []
    prompts = default_recorded_corpus(cache_root(), log=log)
    if prompts is not None:
        out.append(Candidate("recorded-prompts", f"manifest:{all_prompts_manifest(prompts, cache_root())}"))
    readings = readings_folder(cache_root())
    if readings is not None:
        out.append(Candidate(READINGS, f"folder:{readings[0]}"))
    out.append(Candidate("synth-general", "synth:default", CANARY_VOICES))
    if hub_offline_reason() is None:
        out.append(Candidate("librispeech-test", "librispeech:test", n=64))
    return out


def candidates(canaries: Iterable[str], log=print) -> list[Candidate]:
    """``--canary`` values as sets to load: none given = the defaults; ``none`` = no canary at all."""
    canaries = list(canaries)
    if canaries == ["none"]:
        return []
    if not canaries:
        return default_canaries(log)
    named = [Candidate(*parse_canary(c)) for c in canaries]
    seen = [c.name for c in named]
    dup = sorted({n for n in seen if seen.count(n) > 1})
    if dup:
        raise DataError(f"--canary names must differ; '{dup[0]}' is given twice")
    return named


def replay_candidate(spec: str) -> Candidate | None:
    if not spec:
        return None
    return Candidate("replay", "synth:default", REPLAY_VOICES) if spec == "default" else Candidate("replay", spec)


def _audio_ids(utts: Iterable[Utterance]) -> set:
    return {x for u in utts for x in (u.extra.get("fingerprint"), u.extra.get("path")) if x}


def drop_overlap(utts: list[Utterance], audio_of: Iterable[Utterance], sentences_of: Iterable[Utterance],
                 sentence_reason: str,
                 audio_reason: str = "same audio as a run clip") -> tuple[list[Utterance], dict[str, int]]:
    """``utts`` without clips whose audio (file or content) is in ``audio_of`` or whose sentence is in
    ``sentences_of``; the dropped ones counted by reason."""
    audio, sentences = _audio_ids(audio_of), {sentence_key(u.text) for u in sentences_of}
    kept, dropped = [], {}
    for u in utts:
        if {u.extra.get("fingerprint"), u.extra.get("path")} & audio:
            dropped[audio_reason] = dropped.get(audio_reason, 0) + 1
        elif sentence_key(u.text) in sentences:
            dropped[sentence_reason] = dropped.get(sentence_reason, 0) + 1
        else:
            kept.append(u)
    return kept, dropped


def split_canary(name: str, utts: list[Utterance], clips: int, seed: int,
                 words: int = 0) -> tuple[list[Utterance], list[Utterance]]:
    """(validation slice, test part): whole sentences in a seeded order, first up to :data:`GUARD_WORDS` reference
    words (a quarter of what there is) for the guardrail, then the test part, until it holds at least ``clips`` clips
    and ``words`` words (or the canary runs out)."""
    groups: dict[str, list[Utterance]] = {}
    for u in sorted(utts, key=lambda u: u.id):
        groups.setdefault(sentence_key(u.text), []).append(u)
    keys = sorted(groups)
    random.Random(f"{seed}-{name}").shuffle(keys)
    total = sum(len(u.text.split()) for u in utts)
    val_words = min(GUARD_WORDS, total // 4) if len(utts) >= 2 * MIN_CLIPS else 0
    val, test, in_val, in_test = [], [], 0, 0
    for k in keys:
        n = sum(len(u.text.split()) for u in groups[k])
        if in_val < val_words:
            val, in_val = val + groups[k], in_val + n
        elif len(test) < clips or in_test < words:
            test, in_test = test + groups[k], in_test + n
    return sorted(val, key=lambda u: u.id), sorted(test, key=lambda u: u.id)


def _at(x: np.ndarray, dbfs: float) -> np.ndarray:
    x = x - x.mean()
    return (x / np.sqrt(np.mean(x ** 2)) * 10 ** (dbfs / 20)).astype(np.float32)


def _room(rng: np.random.Generator, n: int) -> np.ndarray:
    """Brown noise (energy falls 6 dB per octave, like a room's rumble) without drift below ~10 Hz."""
    room = np.cumsum(rng.standard_normal(n))
    return room - np.convolve(room, np.ones(1601) / 1601, mode="same")


def _hum(n: int) -> np.ndarray:
    """Mains hum: 50 Hz and two harmonics."""
    return sum(np.sin(2 * np.pi * f * np.arange(n) / 16000) / k for k, f in enumerate((50, 100, 150), 1))


def quiet_clips(seconds: float = 3.0, seed: int = 0) -> dict[str, np.ndarray]:
    """The clips with no speech that every run reports (``cost.quiet``), made here: digital silence, white noise and
    a low rumble (room noise) at several levels, and mains hum. A model should write nothing for any of them."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    white = rng.standard_normal(n)
    room = _room(rng, n)
    return {"silence": np.zeros(n, np.float32),
            "white-noise-60dBFS": _at(white, -60), "white-noise-45dBFS": _at(white, -45),
            "white-noise-30dBFS": _at(white, -30),
            "room-noise-50dBFS": _at(room, -50), "room-noise-35dBFS": _at(room, -35),
            "hum-40dBFS": _at(_hum(n) + 0.1 * white, -40)}


QUIET_TRAINING_CLIPS = 32  # clips without speech drawn for --quiet-ratio (each step takes a few of them)
QUIET_GUARD_CLIPS = 8  # ... and for the guardrail, which refuses a check that writes words on one


def quiet_set(purpose: str, count: int, seed: int, seconds: tuple[float, float] = (1.0, 8.0)) -> list[Utterance]:
    """``count`` clips without speech and with an empty transcript, drawn for ``purpose`` ("train" or "guard"):
    ``seconds`` long (uniform) of silence, white noise (-75 to -30 dBFS), room rumble (-65 to -30 dBFS) or hum (-55 to
    -35 dBFS). Each purpose and seed is its own draw, and none is the reported :func:`quiet_clips`, so the run never
    reports clips it trained on or kept a checkpoint by."""
    rng = np.random.default_rng([seed, {"train": 1, "guard": 2}[purpose]])
    out = []
    for i in range(count):
        n = int(rng.uniform(*seconds) * 16000)
        kind = ("silence", "white-noise", "room-noise", "hum")[i % 4]
        if kind == "silence":
            x, level = np.zeros(n, np.float32), None
        elif kind == "white-noise":
            level = rng.uniform(-75, -30)
            x = _at(rng.standard_normal(n), level)
        elif kind == "room-noise":
            level = rng.uniform(-65, -30)
            x = _at(_room(rng, n), level)
        else:
            level = rng.uniform(-55, -35)
            x = _at(_hum(n) * rng.uniform(0.5, 1.5) + 0.1 * rng.standard_normal(n), level)
        name = kind if level is None else f"{kind}-{-level:.0f}dBFS"
        out.append(Utterance(f"quiet-{purpose}-{i:02d}-{name}", x, "", "quiet", {"quiet": True, "dbfs": level}))
    return out


def quiet_seconds(clips: list[Utterance]) -> tuple[float, float]:
    """Lengths for the training's quiet clips: from the shortest of the user's clips to their median, so that a quiet
    clip in a batch seldom pads it beyond the user's own: a batch is padded to its longest clip, and 1-8 s of noise
    beside 2-5 s DevOps clips would set most batches' length."""
    lengths = sorted(u.duration for u in clips)
    low, mid = max(lengths[0], 0.5), lengths[len(lengths) // 2]
    return low, max(mid, low)


def canary_words(c: dict) -> tuple[str, str]:
    """(recorded | synthesized, within | BEYOND | not judged (N words)) for a canary row of the run's ``cost``."""
    kind = "recorded" if c["recorded"] else "synthesized"
    if c["skipped"] or not c["gated"]:
        return kind, "skipped" if c["skipped"] else f"not judged ({c['baseline']['words']} words)"
    if not c["within_bound"]:
        return kind, "BEYOND"
    if c["regression"] > c.get("regression_low", c["regression"]) and c["regression"] > 0:
        return kind, f"within: the clips support at least {c['regression_low']:+.1%}"
    return kind, "within"


def regression(before: float, after: float) -> float:
    """Relative WER change: (after - before) / max(before, WER_FLOOR); +0.10 = 10% worse."""
    return (after - before) / max(before, WER_FLOOR)


def load_set(c: Candidate, load: Callable[[str, int | None], tuple]) -> tuple:
    """(SourceInfo, kept utterances) of a candidate, through ``load(spec, n)`` (the run's loader and screen),
    with every failure named for the flag it came from."""
    try:
        info, utts = load(c.spec, c.n)
    except DataError as exc:
        flag = "--replay" if c.name == "replay" else f"--canary {c.name}"
        raise DataError(f"{flag} ({c.spec}): {exc}") from None
    if c.speakers is not None:
        utts = [u for u in utts if u.speaker in c.speakers]
        info.description += f", only voices {', '.join(c.speakers)}"
    return info, utts


@dataclass
class General:
    """The run's canaries and replay set."""

    canaries: list[SpeechSet]
    replay: SpeechSet | None

    @property
    def measured(self) -> list[SpeechSet]:
        return [c for c in self.canaries if not c.skipped]

    def summary(self) -> dict:
        return {"canaries": {c.name: c.summary() for c in self.canaries},
                "replay": self.replay.summary() if self.replay else None}


def prepare_general(canaries: Iterable[str], replay: str, clips: int, seed: int, run_clips: dict[str, list[Utterance]],
                    load: Callable[[str, int | None], tuple], text_mode: Callable[[str], str], log=print,
                    source: str = "", words: int = 0) -> General:
    """Load, check and draw the canaries and the replay set; ``run_clips`` are the run's train/validation/test parts,
    drawn from ``source``.

    Every source is read before training starts, so an unreadable one fails the run at once. A canary from the
    run's own ``source`` also loses the clips of every voice trained on (speaker names are only comparable
    within one source).
    """
    trained, held = run_clips["train"], run_clips["validation"] + run_clips["test"]
    trained_voices = {u.speaker for u in trained}
    sets = []
    for c in candidates(canaries, log):
        info, utts = load_set(c, load)
        voice_dropped = 0
        if c.spec == source:
            kept = [u for u in utts if u.speaker not in trained_voices]
            voice_dropped, utts = len(utts) - len(kept), kept
        utts, dropped = drop_overlap(utts, trained + held, trained, "sentence trained on")
        if voice_dropped:
            dropped["voice trained on"] = voice_dropped
        val, test = split_canary(c.name, utts, clips, seed, words)
        s = SpeechSet(c.name, c.spec, info.description, not info.synthesized, test, val, dropped)
        if len(val) + len(test) < MIN_CLIPS and c.name != READINGS:  # a lone beckett.wav is still reported
            s.skipped = f"{len(utts)} clips left after the overlap checks (fewer than {MIN_CLIPS})"
        sets.append(s)
        log(f"canary {c.name}: {info.description}; " + (f"skipped: {s.skipped}" if s.skipped else
            f"{len(test)} test + {len(val)} guardrail clips") + (f"; dropped {dropped}" if dropped else ""))
    rc = replay_candidate(replay)
    replay_set = None
    if rc is not None:
        info, utts = load_set(rc, load)
        measured = [u for s in sets for u in s.test + s.val]
        utts, dropped = drop_overlap(utts, held + measured, held + measured, "held-out or canary sentence",
                                     "same audio as a held-out or canary clip")
        if not utts:
            raise DataError(f"--replay {replay}: no clip left after dropping held-out and canary audio and sentences "
                            f"({dropped}); give general speech that is not your test set or a canary")
        for u in utts:
            u.text = text_mode(u.text)
        replay_set = SpeechSet("replay", rc.spec, info.description, not info.synthesized,
                               sorted(utts, key=lambda u: u.id), dropped=dropped)
        log(f"replay: {info.description}; {len(utts)} clips, "
            f"{len({u.speaker for u in utts})} speakers" + (f"; dropped {dropped}" if dropped else ""))
    return General(sets, replay_set)
