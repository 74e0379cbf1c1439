"""Turning utterances into model batches: labels, padding, length-bucketed order.

Labels are ``text tokens + </s>`` with no leading ``<s>``: the model shifts them right behind
``decoder_start_token_id`` (1) itself, so the decoder sees ``<s> t1 .. tn`` and learns to
predict ``t1 .. tn </s>``, exactly what ``generate`` does at inference.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch

IGNORE = -100


def encode_labels(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]


def pad_labels(labels: Sequence[list[int]]) -> torch.Tensor:
    """Right-pad label lists with IGNORE (-100) so padding never counts in the loss."""
    width = max(len(x) for x in labels)
    return torch.tensor([list(x) + [IGNORE] * (width - len(x)) for x in labels], dtype=torch.long)


def collate(processor, audios: Sequence[np.ndarray], labels: Sequence[list[int]] | None = None) -> dict:
    batch = processor.feature_extractor(list(audios), sampling_rate=16000, padding=True,
                                        return_attention_mask=True, return_tensors="pt")
    out = {"input_values": batch["input_values"], "attention_mask": batch["attention_mask"]}
    if labels is not None:
        out["labels"] = pad_labels(labels)
    return out


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Deterministic batches of indices, longest first, for evaluation (little padding)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def bucketed_batches(lengths: Sequence[int], batch_size: int, rng: random.Random, window: int = 50) -> list[list[int]]:
    """Training order: shuffle, sort by length inside windows of ``window`` batches, shuffle batches.

    Clips in a batch have similar lengths (little padding) while the epoch order stays random.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = max(batch_size * window, batch_size)
    batches = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches
