"""Key terms, scored apart from the other words (``--terms FILE``).

A domain user cares about their terms most ("kubectl", "PostgreSQL", "Argo CD"), and WER over all words hides
them: one term in ten words moves WER by a tenth of what it means to the user. So, on the held-out set:

* **recall** of each term: of its occurrences in the references, how many the transcript also has. An
  utterance counts ``min(in reference, in transcript)``: a term said twice and written once is one of two.
  A term is a run of whole words after :func:`lora.data.text.normalize` (the text WER is computed on), so
  "PostgreSQL," and "postgresql" are one term and "Redis" does not match inside "Rediscover".
* **extra**: occurrences a transcript has beyond its reference's (a term written where it was not said).
* **WER on the other words** (the "unbiased WER" of contextual-biasing papers, e.g. Le et al. 2021): the word
  errors of jiwer's alignment that fall on reference words outside every term (substitutions, deletions), plus the
  inserted words that are not a term, over the number of reference words outside the terms. A term misheard as
  other words ("USchubectil" for "kubectl") is then a term error, not an error on the other words, and a gain on the
  terms cannot hide a loss elsewhere.

jiwer aligns the words; it has no notion of key terms, so this module is the small piece on top of its alignment.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lora.data.text import list_lines, normalize
from lora.errors import DataError


def read_terms(path: str | Path) -> list[str]:
    """The terms of a text file, one per line (``#`` starts a comment), as written (duplicates after normalizing
    dropped). Refused, naming the file: missing, unreadable, empty, or a line that normalizes to nothing."""
    p = Path(path)
    terms, seen = [], set()
    for n, text in list_lines(p, f"--terms {p}", "term"):
        key = normalize(text)
        if not key:
            raise DataError(f"--terms {p}, line {n}: '{text}' has no word left after normalizing (punctuation only)")
        if key not in seen:
            seen.add(key)
            terms.append(text)
    if not terms:
        raise DataError(f"--terms {p}: no terms (one per line; '#' starts a comment)")
    return terms


def _count(tokens: list[str], term: list[str]) -> int:
    """Non-overlapping occurrences of the word run ``term`` in ``tokens``."""
    n, i, k = 0, 0, len(term)
    while i + k <= len(tokens):
        if tokens[i:i + k] == term:
            n, i = n + 1, i + k
        else:
            i += 1
    return n


def _term_mask(tokens: list[str], terms: list[list[str]]) -> list[bool]:
    """For each token: part of an occurrence of a term (longest terms first, left to right)."""
    mask, i = [False] * len(tokens), 0
    ordered = sorted(terms, key=len, reverse=True)
    while i < len(tokens):
        hit = next((t for t in ordered if tokens[i:i + len(t)] == t), None)
        if hit:
            mask[i:i + len(hit)] = [True] * len(hit)
            i += len(hit)
        else:
            i += 1
    return mask


def _other_errors(r: list[str], h: list[str], keys: list[list[str]]) -> tuple[int, int]:
    """(errors on the words outside the terms, those words in the reference) for one utterance."""
    import jiwer

    ref_term, hyp_term = _term_mask(r, keys), _term_mask(h, keys)
    words = ref_term.count(False)
    if not h:
        return words, words
    if not r:
        return hyp_term.count(False), 0
    errors = 0
    for chunk in jiwer.process_words(" ".join(r), " ".join(h)).alignments[0]:
        if chunk.type in ("substitute", "delete"):
            errors += sum(not ref_term[i] for i in range(chunk.ref_start_idx, chunk.ref_end_idx))
        elif chunk.type == "insert":
            errors += sum(not hyp_term[i] for i in range(chunk.hyp_start_idx, chunk.hyp_end_idx))
    return errors, words


def occurrences(texts: Sequence[str], terms: Sequence[str]) -> dict[str, int]:
    """How often each term occurs in ``texts`` (e.g. the training clips' transcripts)."""
    toks = [normalize(t).split() for t in texts]
    keys = {term: normalize(term).split() for term in terms}
    return {term: sum(_count(t, key) for t in toks) for term, key in keys.items()}


def term_scores(refs: Sequence[str], hyps: Sequence[str], terms: Sequence[str]) -> dict:
    """Recall of each term, over all terms, and WER on the other words (see the module docstring)."""
    keys = {term: normalize(term).split() for term in terms}
    per = {term: {"occurrences": 0, "found": 0, "extra": 0} for term in terms}
    errors = other = 0
    for ref, hyp in zip(refs, hyps, strict=True):
        r, h = normalize(ref).split(), normalize(hyp).split()
        for term, key in keys.items():
            in_ref, in_hyp = _count(r, key), _count(h, key)
            per[term]["occurrences"] += in_ref
            per[term]["found"] += min(in_ref, in_hyp)
            per[term]["extra"] += max(in_hyp - in_ref, 0)
        e, n = _other_errors(r, h, list(keys.values()))
        errors, other = errors + e, other + n
    for row in per.values():
        row["recall"] = row["found"] / row["occurrences"] if row["occurrences"] else None
    total = sum(r["occurrences"] for r in per.values())
    found = sum(r["found"] for r in per.values())
    return {"terms": per, "occurrences": total, "found": found, "extra": sum(r["extra"] for r in per.values()),
            "recall": found / total if total else None,
            "other_words": other, "other_wer": errors / other if other else None}


def check_terms_held_out(terms: Sequence[str], test_texts: Sequence[str], path: str) -> list[str]:
    """The terms that occur in no held-out reference (their recall cannot be measured); refused when that is all
    of them, naming the file and the fix."""
    counts = occurrences(test_texts, terms)
    absent = [t for t, n in counts.items() if n == 0]
    if len(absent) == len(terms):
        raise DataError(f"--terms {path}: none of its {len(terms)} terms occurs in the held-out set, so no recall can "
                        "be measured; hold out sentences that use them (--test-source) or list the terms they use")
    return absent


def terms_line(before: dict, after: dict) -> str:
    """The summary's line: recall before -> after, extra, and WER on the other words."""
    def recall(s: dict) -> str:
        return f"{s['found']}/{s['occurrences']} ({s['recall']:.1%})"

    other = (f"; WER on the other {after['other_words']} words {before['other_wer']:.2%} -> {after['other_wer']:.2%}"
             if after["other_wer"] is not None else "")
    measured = sum(1 for r in after["terms"].values() if r["occurrences"])
    terms = "term" if measured == 1 else "terms"
    return (f"terms: recall {recall(before)} -> {recall(after)} on {measured} {terms} in the held-out set; "
            f"written where not said {before['extra']} -> {after['extra']}{other}")


def score_run(run: Path, terms: Sequence[str]) -> dict:
    """``baseline`` and ``tuned`` :func:`term_scores` of a run folder's predictions files."""
    from lora.storage import artifacts as R

    out = {}
    for tag, name in (("baseline", R.PRED_BASELINE), ("tuned", R.PRED_TUNED)):
        rows = R.read_jsonl(run / name)
        out[tag] = term_scores([r["reference"] for r in rows], [r["prediction"] for r in rows], terms)
    return out
