"""What tuning cost: the canaries and the quiet clips measured before and after, and the guardrail.

The run measures every canary's test part (:mod:`lora.data.general`) exactly as it measures its
own test split (token-weighted loss, WER normalized and raw, CER), and transcribes clips with no
speech in them (:func:`lora.data.general.quiet_clips`). :func:`cost_summary` puts both sides
together: each canary's relative WER change against ``--max-regression`` (judged only for canaries
of at least :data:`lora.data.general.GATE_WORDS` reference words, and beyond the bound only when the
clips show it with 95% confidence: :func:`regression_low`, a paired bootstrap; the point estimate and
that lower bound are both recorded), and the words the tuned model
writes on quiet clips where the base model writes none.

:class:`Guard` is what the training loop watches: each canary's validation slice and a few clips without speech,
transcribed at step 0 and at every validation check whose loss is the lowest so far (the checks that could be
kept); a checkpoint can be kept only while no canary's slice shows a regression beyond the bound of the untouched
model's (each canary on its own: a gain on one cannot hide a loss on another), judged like the test parts, by
:func:`regression_low`, and it writes no word on a quiet clip where the untouched model wrote none.
"""

from __future__ import annotations

import dataclasses

from lora.data.general import GATE_WORDS, WER_FLOOR, General, quiet_clips, regression
from lora.data.text import words
from lora.errors import LoraError
from lora.evaluation.evaluate import Clips, EvalContext, evaluate, transcribe, wer_metrics


def measure_canaries(model, ctx: EvalContext, general: General):
    """({canary: metrics}, {canary: transcripts}) on each measured canary's test part."""
    metrics, hyps = {}, {}
    for s in general.measured:
        refs = [u.text for u in s.test]
        loss, out = evaluate(model, ctx, Clips(s.test), texts=refs)
        errors, counts = clip_errors(refs, out)
        metrics[s.name] = {"test_loss": loss, **wer_metrics(refs, out), "words": sum(counts), "clip_errors": errors,
                           "clip_words": counts}
        hyps[s.name] = out
    return metrics, hyps


def clip_errors(refs, hyps) -> tuple[list[int], list[int]]:
    """Word errors (substitutions + deletions + insertions, normalized text) and reference words of each clip."""
    import jiwer

    from lora.data.text import normalize

    errors, counts = [], []
    for r, h in zip(refs, hyps, strict=True):
        r, h = normalize(r), normalize(h)
        o = jiwer.process_words(r, h) if r else None
        errors.append(o.substitutions + o.deletions + o.insertions if o else len(h.split()))
        counts.append(len(r.split()))
    return errors, counts


def regression_low(before: dict, after: dict, resamples: int = 2000, seed: int = 0) -> float:
    """The regression that the clips support with 95% confidence (one-sided): the 5th percentile of the regression
    over a paired bootstrap of the canary's clips. A few words on a small canary do not clear the bound by it."""
    import numpy as np


    b, t, w = (np.asarray(x, dtype=np.float64) for x in (before["clip_errors"], after["clip_errors"],
                                                          before["clip_words"]))
    idx = np.random.default_rng(seed).integers(0, len(w), (resamples, len(w)))
    n = np.maximum(w[idx].sum(1), 1)
    base = b[idx].sum(1) / n
    return float(np.percentile((t[idx].sum(1) / n - base) / np.maximum(base, WER_FLOOR), 5))


def measure_quiet(model, ctx: EvalContext) -> dict[str, str]:
    """What the model writes for each clip without speech (a few short clips: one batch, on every rank)."""
    clips = quiet_clips()
    one_batch = dataclasses.replace(ctx, batch_size=len(clips), dist=None)
    return dict(zip(clips, transcribe(model, one_batch, list(clips.values())), strict=True))


def quiet_summary(before: dict[str, str], after: dict[str, str]) -> dict:
    clips = {n: {"baseline": before[n], "tuned": after[n], "baseline_words": words(before[n]),
                 "tuned_words": words(after[n])} for n in before}
    added = {n: c["tuned_words"] for n, c in clips.items() if c["baseline_words"] == 0 and c["tuned_words"] > 0}
    return {"clips": clips, "added_words": sum(added.values()), "clips_with_added_words": sorted(added),
            "baseline_words": sum(c["baseline_words"] for c in clips.values()),
            "tuned_words": sum(c["tuned_words"] for c in clips.values())}


def quiet_line(q: dict) -> str:
    """The clips without speech in one line, as the summary, verify_run, export_onnx and the report say it."""
    return (f"{len(q['clips'])} clips of silence and noise: {q['baseline_words']} words before, {q['tuned_words']} "
            f"after, {q['added_words']} added where the base model wrote none"
            + (f" ({', '.join(q['clips_with_added_words'])})" if q["added_words"] else ""))


def cost_fix(name: str, cfg: dict) -> str:
    """What a user can do about a failed cost check (``name``: a canary, or ``quiet``), given the run's config: the
    flag to rerun with, and the explicit override that ``verify_run`` and ``export_onnx`` record."""
    if name == "quiet":
        rerun = ("rerun with a larger --quiet-ratio" if cfg.get("quiet_ratio") else
                 "rerun with --quiet-ratio 0.125 (clips without speech and an empty target in training, as the "
                 "personal preset does)")
    else:
        rerun = ("rerun with a larger --replay-ratio or a lower --learning-rate" if cfg.get("replay") else
                 "rerun with --replay default --replay-ratio 0.25 (general speech in every batch) or a lower "
                 "--learning-rate")
    return f"fix: {rerun}; or ship it knowing the cost: --accept-cost {name} (recorded)"


def judge(before: dict, after: dict, bound: float) -> tuple[float, float, bool]:
    """(regression, its one-sided 95% lower bound, within): a canary's WER change is beyond ``bound`` only when the
    point estimate and :func:`regression_low` both are. ``before``/``after``: ``wer`` and ``clip_errors`` of the same
    clips (``before`` also ``clip_words``). The rule for the test parts and the guardrail's slices alike."""
    r, low = regression(before["wer"], after["wer"]), regression_low(before, after)
    return r, low, r <= bound or low <= bound


Z_ONE_SIDED_95 = 1.645


def words_to_see(bound: float, base_wer: float) -> int:
    """Reference words a canary needs before a WER rise of ``bound`` (relative) at ``base_wer`` can be told from noise
    (one-sided 95%), in the kindest case: every extra error is new (none fixed). The extra errors are then about
    Poisson, k = bound * max(base_wer, WER_FLOOR) * words of them, and k stands out of its own noise when
    k > 1.645 * sqrt(k), i.e. k > 2.7 errors. At a 6.4% base WER and +10%: 423 words. Where tuning also fixes errors
    (it does) more are needed."""
    import math

    return math.ceil(Z_ONE_SIDED_95 ** 2 / (bound * max(base_wer, WER_FLOOR)))


def recorded_guard(canaries: dict, bound: float) -> dict:
    """How much recorded speech the run's cost was measured on: the words of the measured recorded canaries' test
    parts, their pooled base WER, and :func:`words_to_see` at it (at the floor when there is none)."""
    rec = {n: c for n, c in canaries.items() if c["recorded"] and not c["skipped"]}
    words_ = sum(c["baseline"]["words"] for c in rec.values())
    errors = sum(sum(c["baseline"]["clip_errors"]) for c in rec.values())
    base = errors / words_ if words_ else 0.0
    needed = words_to_see(bound, base)
    return {"canaries": sorted(rec), "words": words_, "base_wer": base, "words_needed": needed,
            "enough": words_ >= needed}


def recorded_of(cost: dict) -> dict:
    """A run's ``cost.recorded``, derived from its canary rows where the run did not store it."""
    return cost.get("recorded") or recorded_guard(cost["canaries"], cost["max_regression"])


def recorded_line(g: dict, bound: float) -> str:
    """The recorded-speech guard in one line, as the summary, verify_run and the report say it."""
    held = f"{g['words']} words of recorded speech" + (f" ({', '.join(g['canaries'])})" if g["canaries"] else "")
    need = (f"a {bound:+.0%} rise at {'their' if g['words'] else 'a'} base WER of "
            f"{max(g['base_wer'], WER_FLOOR):.1%} needs {g['words_needed']} words to be told from noise")
    if g["enough"]:
        return f"the canaries hold {held}; {need}"
    return (f"UNGUARDED ON RECORDED SPEECH: the canaries hold {held}; {need}, so a rise up to the bound on real "
            "voices this run was not tuned for can pass unseen: add --canary NAME=SPEC with recordings of other "
            "voices (docs/canaries.md, 'Recorded speech')")


def cost_summary(general: General, before: dict, after: dict, quiet_before: dict, quiet_after: dict,
                 bound: float) -> dict:
    """The ``cost`` block of real_metrics.json."""
    canaries = {}
    for s in general.canaries:
        row = {"description": s.description, "recorded": s.recorded, "spec": s.spec, "skipped": s.skipped}
        if not s.skipped:
            b, t = before[s.name], after[s.name]
            r, low, within = judge(b, t, bound)
            row.update(baseline=b, tuned=t, regression=r, regression_low=low, gated=b["words"] >= GATE_WORDS,
                       within_bound=within)
        canaries[s.name] = row
    judged = [c for c in canaries.values() if c.get("gated")]
    return {"max_regression": bound, "canaries": canaries, "quiet": quiet_summary(quiet_before, quiet_after),
            "within_bound": all(c["within_bound"] for c in judged), "judged": len(judged),
            "recorded": recorded_guard(canaries, bound)}


class Guard:
    """Each canary's validation slice and clips without speech of its own (:func:`lora.data.general.quiet_set`):
    their word errors and words at a validation check (see the module docstring)."""

    def __init__(self, general: General, ctx: EvalContext, bound: float, quiet=()):
        self.slices = {s.name: s.val for s in general.measured if s.val}
        self.clips = [u for us in self.slices.values() for u in us]
        self.words = {name: [words(u.text) for u in us] for name, us in self.slices.items()}
        self.quiet = list(quiet)
        self.ctx, self.bound = ctx, bound

    def __bool__(self) -> bool:
        return bool(self.clips or self.quiet)

    def measure(self, model) -> dict:
        """``canary_wer`` and ``canary_clip_errors`` (word errors of each clip) of every canary's slice, and
        ``quiet_words``: the words written on each quiet clip; the row a validation check logs."""
        wer, errors = {}, {}
        for name, clips in self.slices.items():
            hyps = transcribe(model, self.ctx, Clips(clips))
            refs = [u.text for u in clips]
            wer[name], errors[name] = wer_metrics(refs, hyps)["wer"], clip_errors(refs, hyps)[0]
        row = {"canary_wer": wer, "canary_clip_errors": errors}
        if self.quiet:
            row["quiet_words"] = [words(h) for h in transcribe(model, self.ctx, Clips(self.quiet))]
        return row

    def within(self, base: dict, now: dict) -> bool:
        """No words on a quiet clip where the untouched model (``base``, step 0's row) wrote none, and every
        canary's slice within the bound of the untouched model's, unless its clips show otherwise.

        The canaries by :func:`judge`, as the test parts are judged: beyond the bound only when the point estimate
        and the regression's one-sided 95% lower bound (paired over the slice's clips) both are. A slice is a
        couple of dozen clips, often one-word prompts: by the point estimate alone one word more vetoed every check
        of a run. The bootstrap's limit: a rise on one or two clips only (about a third of resamples leave out any
        one clip) is never shown, however large.
        """
        base_errors, now_errors = base.get("canary_clip_errors", {}), now["canary_clip_errors"]
        if ({n: len(e) for n, e in base_errors.items()} != {n: len(w) for n, w in self.words.items()}
                or len(base.get("quiet_words", [])) != len(self.quiet)):
            raise LoraError("the guardrail's canary slices or quiet clips differ from those of this run's step 0 "
                            "(resumed with other canaries, or from an older version's checkpoints); start it again "
                            "with --force")
        if any(b == 0 and w > 0 for b, w in zip(base.get("quiet_words", []), now.get("quiet_words", []), strict=True)):
            return False

        def slice_(n: str, errors: list[int]) -> dict:
            return {"wer": sum(errors) / max(sum(self.words[n]), 1), "clip_errors": errors, "clip_words": self.words[n]}

        return all(judge(slice_(n, base_errors[n]), slice_(n, now_errors[n]), self.bound)[2] for n in self.words)
