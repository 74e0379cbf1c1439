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

from lora.batching import encode_labels, sorted_batches
from lora.encoder import encode

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
    """Token-weighted mean cross-entropy over every target token of the split.

    Decoder inputs are the labels shifted right, as the model itself does when given ``labels``;
    the loss is summed here (not the model's batch mean) so every token weighs the same.
    """
    import contextlib

    from transformers.models.moonshine.modeling_moonshine import shift_tokens_right

    from lora.batching import IGNORE, pad_labels

    model.eval()
    labels = [encode_labels(processor.tokenizer, t) for t in texts]
    total, count = 0.0, 0
    for idx in sorted_batches([a.size for a in audios], batch_size):
        target = pad_labels([labels[i] for i in idx]).to(device)
        decoder_input_ids = shift_tokens_right(target, model.config.pad_token_id, model.config.decoder_start_token_id)
        with autocast or contextlib.nullcontext():
            logits = model(encoder_outputs=encode(model, processor, [audios[i] for i in idx], device),
                           decoder_input_ids=decoder_input_ids).logits
        ce = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), target, ignore_index=IGNORE,
                                               reduction="sum")
        total += float(ce)
        count += int((target != IGNORE).sum())
    return total / max(count, 1)


@torch.no_grad()
def transcribe(model, processor, audios: Sequence[np.ndarray], device, batch_size: int = 8, num_beams: int = 1,
               autocast=None, progress: bool = False) -> list[str]:
    """Greedy (or beam) transcripts in input order; identical to transcribing one utterance at a time.

    Batches are length-sorted and encoded with :func:`lora.encoder.encode` (padding cannot change
    the result); ``max_new_tokens`` follows the longest clip of the batch.
    """
    import contextlib

    from tqdm import tqdm

    model.eval()
    out: list[str] = [""] * len(audios)
    batches = sorted_batches([a.size for a in audios], batch_size)
    for idx in tqdm(batches, desc="transcribe", disable=not progress, leave=False):
        clips = [audios[i] for i in idx]
        longest = max(a.size for a in clips) / 16000
        with autocast or contextlib.nullcontext():
            ids = model.generate(encoder_outputs=encode(model, processor, clips, device),
                                 max_new_tokens=max_new_tokens(longest), num_beams=num_beams, do_sample=False)
        # each row keeps only the tokens its own clip would have been allowed alone
        rows = [row[: 1 + max_new_tokens(audios[i].size / 16000)] for i, row in zip(idx, ids, strict=True)]
        for i, text in zip(idx, processor.tokenizer.batch_decode(rows, skip_special_tokens=True), strict=True):
            out[i] = text.strip()
    return out
