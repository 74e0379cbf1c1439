"""What tuning cost: the canaries and the quiet clips measured before and after, and the guardrail.

The run measures every canary's test part (:mod:`lora.data.general`) exactly as it measures its
own test split (token-weighted loss, WER normalized and raw, CER), and transcribes clips with no
speech in them (:func:`lora.data.general.quiet_clips`). :func:`cost_summary` puts both sides
together: each canary's relative WER change against ``--max-regression`` (judged only for canaries
of at least :data:`lora.data.general.GATE_WORDS` reference words), and the words the tuned model
writes on quiet clips where the base model writes none.

:class:`Guard` is what the training loop watches: each canary's validation slice, transcribed at
every validation check; a checkpoint can be kept only while every canary's WER stays within the
bound of the untouched model's (each canary on its own: a gain on one cannot hide a loss on another).
"""

from __future__ import annotations

from lora.data.general import GATE_WORDS, General, quiet_clips, regression, words
from lora.evaluate import Clips, evaluate, transcribe, wer_metrics


def measure_canaries(model, processor, general: General, device, batch_size: int, autocast, dist=None):
    """({canary: metrics}, {canary: transcripts}) on each measured canary's test part."""
    metrics, hyps = {}, {}
    for s in general.measured:
        refs = [u.text for u in s.test]
        loss, out = evaluate(model, processor, Clips(s.test), device, texts=refs, batch_size=batch_size,
                             autocast=autocast, dist=dist)
        metrics[s.name] = {"test_loss": loss, **wer_metrics(refs, out), "words": sum(words(r) for r in refs)}
        hyps[s.name] = out
    return metrics, hyps


def measure_quiet(model, processor, device, autocast) -> dict[str, str]:
    """What the model writes for each clip without speech."""
    clips = quiet_clips()
    return dict(zip(clips, transcribe(model, processor, list(clips.values()), device, batch_size=len(clips),
                                      autocast=autocast), strict=True))


def quiet_summary(before: dict[str, str], after: dict[str, str]) -> dict:
    clips = {n: {"baseline": before[n], "tuned": after[n], "baseline_words": words(before[n]),
                 "tuned_words": words(after[n])} for n in before}
    added = {n: c["tuned_words"] for n, c in clips.items() if c["baseline_words"] == 0 and c["tuned_words"] > 0}
    return {"clips": clips, "added_words": sum(added.values()), "clips_with_added_words": sorted(added),
            "baseline_words": sum(c["baseline_words"] for c in clips.values()),
            "tuned_words": sum(c["tuned_words"] for c in clips.values())}


def cost_summary(general: General, before: dict, after: dict, quiet_before: dict, quiet_after: dict,
                 bound: float) -> dict:
    """The ``cost`` block of real_metrics.json."""
    canaries = {}
    for s in general.canaries:
        row = {"description": s.description, "recorded": s.recorded, "spec": s.spec, "skipped": s.skipped}
        if not s.skipped:
            b, t = before[s.name], after[s.name]
            r = regression(b["wer"], t["wer"])
            row.update(baseline=b, tuned=t, regression=r, gated=b["words"] >= GATE_WORDS, within_bound=r <= bound)
        canaries[s.name] = row
    judged = [c for c in canaries.values() if c.get("gated")]
    return {"max_regression": bound, "canaries": canaries, "quiet": quiet_summary(quiet_before, quiet_after),
            "within_bound": all(c["within_bound"] for c in judged), "judged": len(judged)}


class Guard:
    """Each canary's validation slice: its WER at every validation check (see the module docstring)."""

    def __init__(self, general: General, processor, device, batch_size: int, autocast, bound: float, dist=None):
        self.slices = {s.name: s.val for s in general.measured if s.val}
        self.clips = [u for us in self.slices.values() for u in us]
        self.processor, self.device, self.batch_size, self.autocast = processor, device, batch_size, autocast
        self.bound, self.dist = bound, dist

    def __bool__(self) -> bool:
        return bool(self.clips)

    def wer(self, model) -> dict[str, float]:
        out = {}
        for name, clips in self.slices.items():
            hyps = evaluate(model, self.processor, Clips(clips), self.device, batch_size=self.batch_size,
                            autocast=self.autocast, dist=self.dist)[1]
            out[name] = wer_metrics([u.text for u in clips], hyps)["wer"]
        return out

    def within(self, base: dict[str, float], now: dict[str, float]) -> bool:
        """Every canary's validation WER within the bound of the untouched model's."""
        return all(regression(base[n], now[n]) <= self.bound for n in base)
