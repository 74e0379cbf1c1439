"""Evaluation used before and after training: held-out loss, transcripts, WER/CER.

* Loss is token-weighted over the *whole* split: the sum of per-token cross-entropy divided by
  the number of target tokens (``</s>`` included), not a mean of batch means.
* WER is computed corpus-level with jiwer on text normalized by the Whisper English normalizer
  (``transformers.models.whisper.english_normalizer.EnglishTextNormalizer``: lower case, no
  punctuation, spelled-out numbers to digits, titles and contractions standardized); the raw WER
  on the untouched text is reported beside it. CER is on normalized text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

from lora.batching import collate, encode_labels, sorted_batches

TOKENS_PER_SECOND = 6.5  # Moonshine's documented upper rate of text tokens per second of audio


@lru_cache(maxsize=1)
def _normalizer():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({})


def normalize(text: str) -> str:
    return " ".join(_normalizer()(text).split())


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


def max_new_tokens(seconds: float) -> int:
    return int(math.ceil(seconds * TOKENS_PER_SECOND)) + 8


@torch.no_grad()
def eval_loss(model, processor, audios: Sequence[np.ndarray], texts: Sequence[str], device, batch_size: int = 8,
              autocast=None) -> float:
    """Token-weighted mean cross-entropy over every target token of the split."""
    import contextlib

    model.eval()
    labels = [encode_labels(processor.tokenizer, t) for t in texts]
    total, count = 0.0, 0
    for idx in sorted_batches([a.size for a in audios], batch_size):
        batch = collate(processor, [audios[i] for i in idx], [labels[i] for i in idx])
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast or contextlib.nullcontext():
            logits = model(**batch).logits
        ce = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), batch["labels"], ignore_index=-100,
                                               reduction="sum")
        total += float(ce)
        count += int((batch["labels"] != -100).sum())
    return total / max(count, 1)


@torch.no_grad()
def transcribe(model, processor, audios: Sequence[np.ndarray], device, batch_size: int = 8, num_beams: int = 1,
               autocast=None, progress: bool = False) -> list[str]:
    """Greedy (or beam) transcripts, in input order. Batches are length-sorted and deterministic."""
    import contextlib

    from tqdm import tqdm

    model.eval()
    out: list[str] = [""] * len(audios)
    batches = sorted_batches([a.size for a in audios], batch_size)
    for idx in tqdm(batches, desc="transcribe", disable=not progress, leave=False):
        batch = collate(processor, [audios[i] for i in idx])
        batch = {k: v.to(device) for k, v in batch.items()}
        longest = max(audios[i].size for i in idx) / 16000
        with autocast or contextlib.nullcontext():
            ids = model.generate(**batch, max_new_tokens=max_new_tokens(longest), num_beams=num_beams, do_sample=False)
        for i, text in zip(idx, processor.tokenizer.batch_decode(ids, skip_special_tokens=True), strict=True):
            out[i] = text.strip()
    return out
