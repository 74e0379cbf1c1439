"""From raw utterances to a usable train / validation / test split.

* :func:`screen` drops unusable utterances (silent, empty, empty text, too long) and says how
  many and which, so bad data is counted, never silently trained on; with a store, kept audio
  moves to disk as it is screened (:mod:`lora.data.store`).
* :func:`split_data` draws the parts not given by the user (``--validation-source``,
  ``--test-source``) from the rest, by speaker (:func:`speaker_split`: no speaker in two parts,
  so the test measures new voices) or by utterance (:func:`utterance_split`: one voice is all
  there is, so the test measures adaptation to it); ``auto`` takes speakers when there are
  enough for every part. Then training utterances whose sentence or audio is held out are
  dropped and counted: held-out sentences stay unseen either way.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from lora.config import check_split_ratios
from lora.data import audio as A
from lora.data.sources import Utterance
from lora.data.text import sentence_key
from lora.errors import DataError

PARTS = ("train", "validation", "test")


@dataclass
class Screening:
    kept: list[Utterance]
    rejected: dict[str, list[str]] = field(default_factory=dict)  # reason -> ids

    @property
    def n_rejected(self) -> int:
        return sum(len(v) for v in self.rejected.values())

    def summary(self) -> str:
        if not self.rejected:
            return f"{len(self.kept)} utterances kept, none rejected"
        parts = [f"{len(ids)} {reason} (e.g. {', '.join(ids[:3])})" for reason, ids in self.rejected.items()]
        return f"{len(self.kept)} utterances kept, {self.n_rejected} rejected: " + "; ".join(parts)


def screen(utts: Iterable[Utterance], max_seconds: float | None = None, store=None) -> Screening:
    """Keep the usable utterances (one decoded clip in memory at a time when ``store`` is given)."""
    out = Screening(kept=[])
    seen: set[str] = set()
    for u in utts:
        audio = u.audio
        reason = A.problem(audio, u.text)
        if reason is None and max_seconds and u.duration > max_seconds:
            reason = f"longer than --max-seconds {max_seconds:g}"
        if reason is None and u.id in seen:
            reason = "duplicate id (another clip has it; in a manifest, give each row its own \"id\")"
        if reason:
            out.rejected.setdefault(reason, []).append(u.id)
            continue
        seen.add(u.id)
        u.extra["fingerprint"] = hashlib.sha1(audio.tobytes()).hexdigest()  # the same audio under another name
        u.samples = store.add(audio) if store is not None else audio
        out.kept.append(u)
    if not out.kept:
        raise DataError(f"no usable utterances: {out.summary()}")
    return out


@dataclass
class Split:
    parts: dict[str, list[Utterance]]
    dropped_overlap: int  # training utterances dropped because their text is held out
    mode: str = "speaker"  # how the parts drawn from --source were split: speaker | utterance
    reason: str = ""  # why that mode (auto's choice, or asked for)
    dropped_same_audio: int = 0  # training utterances dropped because the same audio is held out
    given: tuple[str, ...] = ()  # parts given by the user (--validation-source, --test-source)

    def speakers(self, part: str) -> list[str]:
        return sorted({u.speaker for u in self.parts[part]})

    def sentences(self, part: str) -> list[str]:
        """The part's sentences as compared for overlap (lower case, letters, digits and spaces)."""
        return sorted({sentence_key(u.text) for u in self.parts[part]})

    def summary(self) -> dict:
        return {p: {"utterances": len(us), "speakers": len(self.speakers(p)),
                    "hours": round(sum(u.duration for u in us) / 3600, 4)} for p, us in self.parts.items()}


def utterance_split(utts: list[Utterance], ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
                    seed: int = 0) -> Split:
    """Deterministic split by clip, for one voice (or voices without names): clips of the same sentence
    stay together, so held-out sentences are unseen in training; the voices are the same everywhere."""
    check_split_ratios(ratios)
    groups: dict[str, list[Utterance]] = defaultdict(list)
    for u in utts:
        groups[sentence_key(u.text)].append(u)
    needed = sum(1 for r in ratios if r > 0)
    if len(groups) < needed:
        raise DataError(f"an utterance split into {needed} parts needs at least {needed} clips with different "
                        f"sentences; the data has {len(groups)}. Add clips, or give held-out sets with "
                        "--validation-source / --test-source")
    return Split(_deal(groups, ratios, seed, len(utts)), 0, mode="utterance")


def _deal(groups: dict[str, list[Utterance]], ratios, seed: int, total: int) -> dict[str, list[Utterance]]:
    """Whole groups (a speaker's clips, or a sentence's) to validation, then test, in a seeded order, each
    until it holds its share of ``total`` clips (at least one group); training keeps the rest (at least one)."""
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    targets = [r / sum(ratios) * total for r in ratios]
    parts: dict[str, list[Utterance]] = {p: [] for p in PARTS}
    for idx in (1, 2):
        part = parts[PARTS[idx]]
        while ratios[idx] > 0 and len(keys) > 1 and (not part or len(part) < targets[idx]):
            part.extend(groups[keys.pop(0)])
    for key in keys:
        parts["train"].extend(groups[key])
    for p in PARTS:
        parts[p].sort(key=lambda u: u.id)
    return parts


def speaker_split(utts: list[Utterance], ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
                  seed: int = 0) -> Split:
    """Deterministic speaker-disjoint split; ratios are fractions of utterances per part."""
    check_split_ratios(ratios)
    by_spk: dict[str, list[Utterance]] = defaultdict(list)
    for u in utts:
        by_spk[u.speaker].append(u)
    needed = sum(1 for r in ratios if r > 0)
    if len(by_spk) < needed:
        speakers = sorted(by_spk)
        raise DataError(f"a speaker-disjoint split into {needed} parts needs at least {needed} speakers; "
                        f"the data has {len(speakers)} ({', '.join(speakers[:5])}); use --split-by utterance "
                        "(or auto) to split one voice's clips")
    return Split(_deal(by_spk, ratios, seed, len(utts)), 0)


def split_data(utts: list[Utterance], ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0,
               mode: str = "auto", given: dict[str, list[Utterance]] | None = None) -> Split:
    """The parts not in ``given`` drawn from ``utts`` in ``mode``; then held-out sentences and audio leave training."""
    given = {p: us for p, us in (given or {}).items() if us is not None}
    ratios = tuple(0.0 if PARTS[i] in given else float(r) for i, r in enumerate(ratios))
    check_split_ratios(ratios)
    needed = sum(1 for r in ratios if r > 0)
    speakers = sorted({u.speaker for u in utts})
    if mode == "auto":
        chosen = "speaker" if len(speakers) >= needed else "utterance"
        reason = (f"auto: {len(speakers)} speakers for {needed} parts" if chosen == "speaker" else
                  f"auto: {len(speakers)} speaker{'s' if len(speakers) != 1 else ''} for {needed} parts, too few to "
                  "keep voices apart")
    else:
        chosen, reason = mode, f"--split-by {mode}"
    split = speaker_split(utts, ratios, seed) if chosen == "speaker" else utterance_split(utts, ratios, seed)
    for part, us in given.items():
        split.parts[part] = sorted(us, key=lambda u: u.id)
    held = [u for p in ("validation", "test") for u in split.parts[p]]
    held_text = {sentence_key(u.text) for u in held}
    held_audio = {u.extra.get("fingerprint") for u in held} | {u.extra.get("path") for u in held}
    held_audio.discard(None)
    keep, same_text, same_audio = [], 0, 0
    for u in split.parts["train"]:
        if u.extra.get("fingerprint") in held_audio or u.extra.get("path") in held_audio:
            same_audio += 1
        elif sentence_key(u.text) in held_text:
            same_text += 1
        else:
            keep.append(u)
    if ratios[0] > 0 and not keep:
        raise DataError(f"no training utterances left: {same_audio} are held-out audio and {same_text} held-out "
                        "sentences (the held-out set overlaps the training data); give a held-out set that is not "
                        "part of --source")
    split.parts["train"] = keep
    split.dropped_overlap, split.dropped_same_audio = same_text, same_audio
    split.mode, split.reason, split.given = chosen, reason, tuple(sorted(given))
    return split


def sentence_case(text: str) -> str:
    t = text.strip().lower()
    t = re.sub(r"\bi\b", "I", t)
    return t[:1].upper() + t[1:]


def resolve_text_mode(mode: str, texts: Iterable[str]) -> str:
    """``auto``: an all-caps corpus (LibriSpeech) becomes sentence case, anything else stays as is."""
    if mode != "auto":
        return mode
    letters = Counter(c.isupper() for t in texts for c in t if c.isalpha())
    return "sentence" if letters[True] and letters[True] >= 0.95 * (letters[True] + letters[False]) else "as-is"


def apply_text_mode(text: str, mode: str) -> str:
    if mode == "lower":
        return text.strip().lower()
    if mode == "sentence":
        return sentence_case(text)
    return text.strip()
