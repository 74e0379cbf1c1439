"""What tuning cost: the canaries and the quiet clips measured before and after, and the guardrail.

The run measures every canary's test part (:mod:`lora.data.general`) exactly as it measures its
own test split (token-weighted loss, WER normalized and raw, CER), and transcribes clips with no
speech in them (:func:`lora.data.general.quiet_clips`). :func:`cost_summary` puts both sides
together: each canary's relative WER change against ``--max-regression`` (judged only for canaries
of at least :data:`lora.data.general.GATE_WORDS` reference words, and beyond the bound only when the
clips show it with 95% confidence: :func:`regression_low`, a paired bootstrap; the point estimate and
that lower bound are both recorded), and the words the tuned model
writes on quiet clips where the base model writes none.

:class:`Guard` is what the training loop watches: each canary's validation slice, transcribed at step 0 and at
every validation check whose loss is the lowest so far (the checks that could be kept); a checkpoint can be kept
only while no canary's slice shows a regression beyond the bound of the untouched model's (each canary on its
own: a gain on one cannot hide a loss on another), judged like the test parts, by :func:`regression_low`.
"""

from __future__ import annotations

import dataclasses

from lora.data.general import GATE_WORDS, General, quiet_clips, regression
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

    from lora.data.general import WER_FLOOR

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


def judge(before: dict, after: dict, bound: float) -> tuple[float, float, bool]:
    """(regression, its one-sided 95% lower bound, within): a canary's WER change is beyond ``bound`` only when the
    point estimate and :func:`regression_low` both are. ``before``/``after``: ``wer`` and ``clip_errors`` of the same
    clips (``before`` also ``clip_words``). The rule for the test parts and the guardrail's slices alike."""
    r, low = regression(before["wer"], after["wer"]), regression_low(before, after)
    return r, low, r <= bound or low <= bound


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
            "within_bound": all(c["within_bound"] for c in judged), "judged": len(judged)}


class Guard:
    """Each canary's validation slice: its WER and per-clip word errors at a validation check (see the module
    docstring)."""

    def __init__(self, general: General, ctx: EvalContext, bound: float):
        self.slices = {s.name: s.val for s in general.measured if s.val}
        self.clips = [u for us in self.slices.values() for u in us]
        self.words = {name: [words(u.text) for u in us] for name, us in self.slices.items()}
        self.ctx, self.bound = ctx, bound

    def __bool__(self) -> bool:
        return bool(self.clips)

    def measure(self, model) -> tuple[dict[str, float], dict[str, list[int]]]:
        """(WER, word errors of each clip) of every canary's slice."""
        wer, errors = {}, {}
        for name, clips in self.slices.items():
            hyps = transcribe(model, self.ctx, Clips(clips))
            refs = [u.text for u in clips]
            wer[name], errors[name] = wer_metrics(refs, hyps)["wer"], clip_errors(refs, hyps)[0]
        return wer, errors

    def within(self, base: dict[str, list[int]], now: dict[str, list[int]]) -> bool:
        """Every canary's slice within the bound of the untouched model's, unless its clips show otherwise.

        By :func:`judge`, as the test parts are judged: beyond the bound only when the point estimate and the
        regression's one-sided 95% lower bound (paired over the slice's clips) both are. A slice is a couple of dozen
        clips, often one-word prompts: by the point estimate alone one word more vetoed every check of a run. The
        bootstrap's limit: a rise on one or two clips only (about a third of resamples leave out any one clip) is
        never shown, however large; the quiet clips catch words written on silence.
        """
        if {n: len(e) for n, e in base.items()} != {n: len(w) for n, w in self.words.items()}:
            raise LoraError("the guardrail's canary slices differ from those of this run's step 0 (resumed with other "
                            "canaries, or from an older version's checkpoints); start it again with --force")
        def slice_(n: str, errors: list[int]) -> dict:
            return {"wer": sum(errors) / max(sum(self.words[n]), 1), "clip_errors": errors, "clip_words": self.words[n]}

        return all(judge(slice_(n, base[n]), slice_(n, now[n]), self.bound)[2] for n in self.words)
