"""The training and evaluation loss, computed here from the logits (not the model's own ``.loss``).

Labels are ``t1 .. tn </s>`` (:func:`lora.data.batching.encode_labels`), right-padded with IGNORE.
The decoder reads them shifted right *once*, behind ``decoder_start_token_id``: it sees
``<s> t1 .. tn`` and position ``i`` is scored against label ``i``. The cross-entropy is summed
over every target token and returned with the token count, so callers divide by the count of
the whole step or split (every token weighs the same). Moonshine's own ``.loss`` shifted the
labels a second time in transformers before 5.15.0 (PR #46784); owning the loss means no
transformers version can change what we optimise or report.
"""

from __future__ import annotations

import torch

IGNORE = -100  # label positions that never count (padding); the value PyTorch's cross_entropy and transformers use


def decoder_inputs(labels: torch.Tensor, start_id: int, pad_id: int) -> torch.Tensor:
    """``labels`` shifted right by one behind ``start_id``; IGNORE positions read as ``pad_id``."""
    out = torch.full_like(labels, pad_id)
    out[:, 0] = start_id
    out[:, 1:] = labels[:, :-1]
    return out.masked_fill(out == IGNORE, pad_id)


def token_cross_entropy(model, encoder_outputs, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(summed cross-entropy over every target token, number of target tokens) for one batch.

    ``labels`` may be on the host: they are counted there and copied to the encoder states' device, so no
    call waits on the device (a GPU keeps running ahead of Python).
    """
    cfg = model.config
    count = int((labels != IGNORE).sum()) if labels.device.type == "cpu" else None
    labels = labels.to(encoder_outputs.last_hidden_state.device, non_blocking=True)
    logits = model(encoder_outputs=encoder_outputs,
                   decoder_input_ids=decoder_inputs(labels, cfg.decoder_start_token_id, cfg.pad_token_id)).logits
    total = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE,
                                              reduction="sum")
    return total, count if count is not None else int((labels != IGNORE).sum())
