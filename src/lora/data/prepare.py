"""From raw utterances to a usable, speaker-disjoint train / validation / test split.

* :func:`screen` drops unusable utterances (silent, empty, empty text, too long) and says how
  many and which, so bad data is counted, never silently trained on.
* :func:`speaker_split` assigns whole speakers to parts (no speaker in two parts), then drops
  training utterances whose text also occurs in a held-out part (held-out sentences stay unseen).
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from lora.data import audio as A
from lora.data.sources import Utterance
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


def screen(utts: Iterable[Utterance], max_seconds: float | None = None) -> Screening:
    out = Screening(kept=[])
    seen: set[str] = set()
    for u in utts:
        reason = A.problem(u.audio, u.text)
        if reason is None and max_seconds and u.duration > max_seconds:
            reason = f"longer than --max-seconds {max_seconds:g}"
        if reason is None and u.id in seen:
            reason = "duplicate id"
        if reason:
            out.rejected.setdefault(reason, []).append(u.id)
            continue
        seen.add(u.id)
        out.kept.append(u)
    if not out.kept:
        raise DataError(f"no usable utterances: {out.summary()}")
    return out


def _norm_text(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


@dataclass
class Split:
    parts: dict[str, list[Utterance]]
    dropped_overlap: int  # training utterances dropped because their text is held out

    def speakers(self, part: str) -> list[str]:
        return sorted({u.speaker for u in self.parts[part]})

    def summary(self) -> dict:
        return {p: {"utterances": len(us), "speakers": len(self.speakers(p)),
                    "hours": round(sum(u.duration for u in us) / 3600, 4)} for p, us in self.parts.items()}


def speaker_split(utts: list[Utterance], ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0,
                  disjoint_text: bool = True) -> Split:
    """Deterministic speaker-disjoint split; ratios are fractions of utterances per part."""
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise DataError(f"--split-ratios must be three non-negative numbers, got {ratios}")
    by_spk: dict[str, list[Utterance]] = defaultdict(list)
    for u in utts:
        by_spk[u.speaker].append(u)
    speakers = sorted(by_spk)
    needed = sum(1 for r in ratios if r > 0)
    if len(speakers) < needed:
        raise DataError(f"a speaker-disjoint split into {needed} parts needs at least {needed} speakers; "
                        f"the data has {len(speakers)} ({', '.join(speakers[:5])})")
    random.Random(seed).shuffle(speakers)
    total = len(utts)
    targets = [r / sum(ratios) * total for r in ratios]
    parts: dict[str, list[Utterance]] = {p: [] for p in PARTS}
    # Held-out parts take whole speakers until they reach their share; training keeps the rest
    # (and always at least one speaker).
    queue = list(speakers)
    for idx in (1, 2):
        part = parts[PARTS[idx]]
        while ratios[idx] > 0 and len(queue) > 1 and (not part or len(part) < targets[idx]):
            part.extend(by_spk[queue.pop(0)])
    for spk in queue:
        parts["train"].extend(by_spk[spk])
    dropped = 0
    if disjoint_text:
        held = {_norm_text(u.text) for p in ("validation", "test") for u in parts[p]}
        keep = [u for u in parts["train"] if _norm_text(u.text) not in held]
        dropped = len(parts["train"]) - len(keep)
        parts["train"] = keep
    for p in PARTS:
        parts[p].sort(key=lambda u: u.id)
    if ratios[0] > 0 and not parts["train"]:
        raise DataError("the split left no training utterances; add speakers or lower the held-out ratios")
    return Split(parts, dropped)


TEXT_MODES = ("auto", "as-is", "lower", "sentence")


def sentence_case(text: str) -> str:
    t = text.strip().lower()
    t = re.sub(r"\bi\b", "I", t)
    return t[:1].upper() + t[1:]


def resolve_text_mode(mode: str, texts: Iterable[str]) -> str:
    """``auto``: an all-caps corpus (LibriSpeech) becomes sentence case, anything else stays as is."""
    if mode not in TEXT_MODES:
        raise DataError(f"unknown --text-mode '{mode}'; valid: {', '.join(TEXT_MODES)}")
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
