"""Which of a user's sentences are recorded for training and which are held out, decided before recording starts.

The held-out part is whole sentences, so the tuned model is scored on sentences it never heard. With ``terms``, every
term that the sentences use is held out in at least one sentence (its recall is measured on new sentences) and kept
in at least one training sentence where the sentences allow it; a term that only one sentence uses cannot be both,
is held out, and the plan says so (write another sentence with it). General sentences (``general``) can be mixed
into the training part, as the personal preset mixes general speech into every batch.

The plan is seeded: the same sentences, terms and seed give the same plan.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lora.errors import DataError

TRAIN, TEST = "train", "test"
MIN_SENTENCES = 5  # fewer leave no held-out sentence beside a training set worth tuning on


@dataclass(frozen=True)
class Prompt:
    id: str  # p001 ...: the file name the take is saved under (never a name from the page)
    text: str
    part: str  # train | test
    source: str = "yours"  # yours | general


@dataclass(frozen=True)
class Plan:
    prompts: list[Prompt]
    terms: list[str] = field(default_factory=list)
    trained_once: list[str] = field(default_factory=list)  # terms no training sentence uses: recall, not learning
    seed: int = 0

    def part(self, name: str) -> list[Prompt]:
        return [p for p in self.prompts if p.part == name]

    def summary(self) -> str:
        """The plan in one line, as the studio shows it before recording starts."""
        train, test = self.part(TRAIN), self.part(TEST)
        general = sum(p.source == "general" for p in train)
        line = (f"{len(self.prompts)} prompts: {len(train)} to train on" + (f" ({general} general)" if general else "")
                + f", {len(test)} held out (whole sentences)")
        if self.terms:
            line += f"; every one of {len(self.terms)} terms is in a held-out sentence"
        if self.trained_once:
            line += (f"; only held out, in no training sentence: {', '.join(self.trained_once)} (write another "
                     "sentence with each to train on it)")
        return line

    def to_dict(self) -> dict:
        return {"seed": self.seed, "terms": self.terms, "trained_once": self.trained_once,
                "prompts": [asdict(p) for p in self.prompts]}

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        return cls([Prompt(**p) for p in d["prompts"]], d.get("terms", []), d.get("trained_once", []), d.get("seed", 0))


def read_sentences(path: str | Path) -> list[str]:
    """One sentence per line of a file (``#`` starts a comment); see :func:`check_sentences`."""
    from lora.data.text import list_lines

    return check_sentences(list_lines(path, str(path), "sentence"), str(path))


def check_sentences(lines: Sequence[tuple[int, str]], where: str) -> list[str]:
    """The sentences of ``(line number, text)`` pairs; one without a word, or the same sentence twice (both line
    numbers named), is refused."""
    from lora.data.text import sentence_key

    out, seen = [], {}
    for n, text in lines:
        key = sentence_key(text)
        if not key:
            raise DataError(f"{where}, line {n}: '{text}' has no word to read")
        if key in seen:
            raise DataError(f"{where}, lines {seen[key]} and {n}: the same sentence twice; keep one (a sentence is "
                            "either trained on or held out)")
        seen[key] = n
        out.append(text)
    return out


def plan_prompts(sentences: Sequence[str], terms: Sequence[str] = (), test_share: float = 0.2, seed: int = 0,
                 general: Sequence[str] = ()) -> Plan:
    """The plan for ``sentences`` (see the module's docstring)."""
    from lora.evaluation.terms import occurrences

    if not 0 < test_share < 1:
        raise DataError(f"the held-out share must be between 0 and 1, got {test_share}")
    if len(sentences) < MIN_SENTENCES:
        raise DataError(f"{len(sentences)} sentences: a plan needs at least {MIN_SENTENCES} (some to train on, "
                        "some held out)")
    uses = [{t for t, n in occurrences([s], terms).items() if n} for s in sentences]
    absent = [t for t in terms if not any(t in u for u in uses)]
    if absent:
        raise DataError(f"no sentence uses the terms {', '.join(absent)}: add sentences with them, or drop them")
    rng = random.Random(seed)
    test: set[int] = set()

    def still_trained(i: int) -> bool:
        """Holding out sentence ``i`` leaves each of its terms in some training sentence."""
        return all(any(t in uses[j] for j in range(len(uses)) if j != i and j not in test) for t in uses[i])

    for term in sorted(terms, key=lambda t: (sum(t in u for u in uses), terms.index(t))):  # the rarest first
        if any(term in uses[i] for i in test):
            continue
        with_term = [i for i, u in enumerate(uses) if term in u]
        test.add(rng.choice([i for i in with_term if still_trained(i)] or with_term))
    wanted = max(1, round(len(sentences) * test_share))
    rest = [i for i in range(len(sentences)) if i not in test]
    rng.shuffle(rest)
    while len(test) < wanted and len(rest) > 1:  # then any sentence whose terms stay trained on, in seeded order
        pick = next((i for i in rest if still_trained(i)), None)
        if pick is None:
            break
        rest.remove(pick)
        test.add(pick)
    if len(test) >= len(sentences):
        raise DataError(f"the terms need {len(test)} of {len(sentences)} sentences held out, which leaves none to "
                        "train on: add sentences")
    trained = set().union(*(uses[i] for i in range(len(sentences)) if i not in test)) if terms else set()
    prompts = [Prompt(f"p{i + 1:03d}", s, TEST if i in test else TRAIN) for i, s in enumerate(sentences)]
    prompts += [Prompt(f"g{i + 1:03d}", s, TRAIN, "general") for i, s in enumerate(general)]
    return Plan(prompts, list(terms), [t for t in terms if t not in trained], seed)
