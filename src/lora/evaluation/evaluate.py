"""Evaluation used before and after training: held-out loss, transcripts, WER/CER.

* Loss is token-weighted over the *whole* split: the sum of per-token cross-entropy divided by
  the number of target tokens (``</s>`` included), not a mean of batch means.
* WER is computed corpus-level with jiwer on text normalized by :func:`lora.data.text.normalize` (the Whisper
  English normalizer); the raw WER on the untouched text is reported beside it. CER is on normalized text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lora.data.batching import encode_labels, sorted_batches
from lora.data.text import normalize
from lora.model.encoder import encode

TOKENS_PER_SECOND = 6.5  # Moonshine's documented upper rate of text tokens per second of audio


def wer_metrics(refs: Sequence[str], hyps: Sequence[str]) -> dict:
    import jiwer

    pairs = [(normalize(r), normalize(h)) for r, h in zip(refs, hyps, strict=True)]
    kept = [(r, h) for r, h in pairs if r]
    raw = [(r.strip(), h.strip()) for r, h in zip(refs, hyps, strict=True) if r.strip()]
    if not kept:
        raise ValueError("no non-empty references to score")
    return {
        "wer": float(jiwer.wer([r for r, _ in kept], [h for _, h in kept])),
        "wer_raw": float(jiwer.wer([r for r, _ in raw], [h for _, h in raw])),
        "cer": float(jiwer.cer([r for r, _ in kept], [h for _, h in kept])),
        "utterances": len(kept),
    }


def utterance_wer(ref: str, hyp: str) -> float:
    import jiwer

    r = normalize(ref)
    return float(jiwer.wer(r, normalize(hyp))) if r else 0.0


class Clips(Sequence):
    """The audio of utterances as a sequence, read one clip at a time (from disk when stored there);
    ``sizes`` gives every length without reading any audio."""

    def __init__(self, utts):
        self.utts = list(utts)
        self.sizes = [u.n_samples for u in self.utts]

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i):
        return self.utts[i].audio


def max_new_tokens(seconds: float) -> int:
    return int(math.ceil(seconds * TOKENS_PER_SECOND)) + 8


@dataclass(frozen=True)
class EvalContext:
    """How a model is measured, passed as one object instead of six parameters: its processor, the device, the
    evaluation precision (``autocast``: a context manager, None for none), clips per batch, beams (1: greedy) and,
    under ``torchrun``, the ranks (:class:`lora.training.distributed.Dist`; None: one process)."""

    processor: Any
    device: Any
    batch_size: int = 16
    num_beams: int = 1
    autocast: Any = None
    dist: Any = None


def eval_loss(model, ctx: EvalContext, audios: Sequence[np.ndarray], texts: Sequence[str]) -> float:
    """Token-weighted mean cross-entropy over every target token of the split (see :func:`evaluate`)."""
    return evaluate(model, ctx, audios, texts, transcripts=False)[0]


def transcribe(model, ctx: EvalContext, audios: Sequence[np.ndarray], progress: bool = False) -> list[str]:
    """Greedy (or beam) transcripts in input order, identical to one utterance at a time (see :func:`evaluate`)."""
    return evaluate(model, ctx, audios, progress=progress)[1]


@torch.no_grad()
def evaluate(model, ctx: EvalContext, audios: Sequence[np.ndarray], texts: Sequence[str] | None = None,
             transcripts: bool = True, progress: bool = False) -> tuple[float | None, list[str] | None]:
    """One pass over a split: (token-weighted loss against ``texts`` or None, transcripts or None).

    Batches are length-sorted and each is encoded once with :func:`lora.model.encoder.encode` (padding
    cannot change the result), then scored and/or decoded. Loss: :func:`lora.model.loss.token_cross_entropy`, summed
    over the split and divided by its token count, so every token of the split weighs the same. Decoding:
    ``max_new_tokens`` follows the longest clip of the batch, and each row is then cut to what its
    own clip would have been allowed alone. Under ``ctx.dist`` (:mod:`lora.training.distributed`) the batches are
    dealt round-robin over the ranks, then loss sums, token counts and transcripts are combined:
    every batch is computed as in one process, so are the results.
    """
    import contextlib

    from tqdm import tqdm

    from lora.data.batching import pad_labels
    from lora.model.loss import token_cross_entropy

    model.eval()
    processor, device, dist = ctx.processor, ctx.device, ctx.dist
    amp = ctx.autocast or contextlib.nullcontext()
    labels = [encode_labels(processor.tokenizer, t) for t in texts] if texts is not None else None
    total, count = 0.0, 0
    out: list[str] = [""] * len(audios)
    lengths = audios.sizes if isinstance(audios, Clips) else [a.size for a in audios]
    batches = sorted_batches(lengths, ctx.batch_size)
    if dist is not None and dist.active:
        batches = batches[dist.rank::dist.world]
    for idx in tqdm(batches, desc="evaluate", disable=not progress, leave=False):
        clips = [audios[i] for i in idx]
        with amp:
            enc = encode(model, processor, clips, device)
        if labels is not None:
            with amp:
                part, n = token_cross_entropy(model, enc, pad_labels([labels[i] for i in idx]))
            total += float(part)
            count += n
        if transcripts:  # after the loss: beam search expands ``enc`` in place
            with amp:
                ids = model.generate(encoder_outputs=enc,
                                     max_new_tokens=max_new_tokens(max(a.size for a in clips) / 16000),
                                     num_beams=ctx.num_beams, do_sample=False)
            rows = [row[: 1 + max_new_tokens(lengths[i] / 16000)] for i, row in zip(idx, ids, strict=True)]
            for i, text in zip(idx, processor.tokenizer.batch_decode(rows, skip_special_tokens=True), strict=True):
                out[i] = text.strip()
    if dist is not None and dist.active:
        total, count = dist.sum([total, count])
        if transcripts:
            for texts_of_rank in dist.gather({i: out[i] for idx in batches for i in idx}):
                for i, text in texts_of_rank.items():
                    out[i] = text
    return (total / max(count, 1) if labels is not None else None), (out if transcripts else None)
