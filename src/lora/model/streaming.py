"""Moonshine v2 ("streaming", ``MoonshineStreamingForConditionalGeneration``) on a batch of clips of different
lengths, with the same guarantee as :mod:`lora.model.encoder` gives v1: a clip's result does not depend on what it
is batched with.

v2 reads raw audio in 80-sample frames (5 ms), normalizes each frame on its own (CMVN), then two causal
convolutions (kernel 5, stride 2) and an encoder whose layers attend inside sliding windows. Nothing looks across
clips, but three things would still let padding in, and each is closed here:

* the sliding windows are applied only when ``attention_mask`` is passed: without one transformers' encoder
  attends to the whole clip (a model trained with windows, run without them). The mask is always built here, and
  with the windows Moonshine's runtime applies: a (16, 4) layer sees itself, the 16 frames behind it and the 4
  ahead (both bounds inclusive, as ``moonshine_voice/lora/export.py`` bakes them into the exported encoder).
  transformers' ``sliding_window_mask_function`` reads both bounds as exclusive (15 behind, 3 ahead): tuning
  with it would tune a model that is not the one deployed.
* the convolutions' own mask marks an output frame valid when *any* of its inputs is, so a padded clip gets one or
  two frames more than the same clip alone, frames that read padding. The frame mask here is the clip's own frame
  count (``_get_feat_extract_output_lengths``: whole 80-sample frames, halved twice), as if it were alone.
* the decoder adds its position embedding to ``encoder_hidden_states`` *in place*
  (``MoonshineStreamingDecoder.forward``), so scoring a batch and then decoding it, or generating twice, would add
  it twice. :func:`prepare_model` (called on every load) makes the decoder work on a copy.

A clip's tail shorter than one frame (under 5 ms) is dropped, as the model's own processor and Moonshine's runtime
drop it.
"""

from __future__ import annotations

import torch

FRAME = 80  # samples per frame at 16 kHz (``frame_ms`` 5)


def frame_len(model) -> int:
    cfg = model.get_encoder().config
    return int(round(cfg.sample_rate * cfg.frame_ms / 1000.0))


def encoder_frames(model, samples: torch.Tensor) -> torch.Tensor:
    """Encoder frames (what the decoder attends to) for clips of ``samples`` samples, each alone."""
    frames = samples // frame_len(model)
    for _ in range(2):  # two causal convolutions of stride 2, left-padded: ceil(n / 2) each
        frames = (frames - 1) // 2 + 1
    return frames.clamp(min=0)


def runtime_window(past: int, future: int):
    """A layer's window as Moonshine's runtime applies it (a transformers ``and_mask_function``): query ``q`` sees
    key ``k`` when ``-future <= q - k <= past``."""

    def allowed(batch_idx, head_idx, q_idx, kv_idx):
        distance = q_idx - kv_idx
        return (distance <= past) & (distance >= -future)

    return allowed


def encode_padded(model, values: torch.Tensor, samples: torch.Tensor, drop: torch.Tensor | None = None):
    """Encoder states ``[batch, frames, hidden]`` and the frame mask for zero-padded clips ``values`` of ``samples``
    samples each (on the model's device), under the caller's grad mode and autocast. ``drop``: frames zeroed after
    the convolutions (:class:`lora.training.masking.TimeMask`, training only)."""
    from transformers.masking_utils import create_bidirectional_mask
    from transformers.models.moonshine_streaming.modeling_moonshine_streaming import (
        MoonshineStreamingEncoderModelOutput,
    )

    enc = model.get_encoder()
    values = torch.nn.functional.pad(values, (0, -values.shape[1] % frame_len(model)))
    sample_mask = torch.arange(values.shape[1], device=values.device)[None] < samples[:, None]
    hidden, _ = enc.embedder(values, padding_mask=sample_mask)
    mask = torch.arange(hidden.shape[1], device=hidden.device)[None] < encoder_frames(model, samples)[:, None]
    hidden = hidden * mask[..., None].to(hidden.dtype)
    if drop is not None:
        drop = torch.nn.functional.pad(drop.to(hidden.device, non_blocking=True), (0, hidden.shape[1] - drop.shape[1]))
        hidden = hidden.masked_fill(drop[..., None], 0.0)
    for layer, window in zip(enc.layers, enc.config.sliding_windows, strict=True):
        attention = create_bidirectional_mask(config=enc.config, inputs_embeds=hidden, attention_mask=mask,
                                              and_mask_function=runtime_window(*window))
        hidden = layer(hidden, attention_mask=attention)
    return MoonshineStreamingEncoderModelOutput(last_hidden_state=enc.final_norm(hidden), attention_mask=mask.long())


def prepare_model(model) -> None:
    """The decoder adds its position embedding to the encoder states it is given, in place; give it a copy, so the
    caller's states stay what the encoder produced (see the module's docstring). One copy of ``[batch, frames,
    hidden]`` per decoder call."""

    def copy_states(module, args, kwargs):
        states = kwargs.get("encoder_hidden_states")
        if states is not None:
            kwargs["encoder_hidden_states"] = states.clone()
        return args, kwargs

    model.get_decoder().register_forward_pre_hook(copy_states, with_kwargs=True)
