"""Moonshine's encoder on a batch of clips of different lengths, without letting padding change the result.

Moonshine's stem is ``conv1 -> tanh -> GroupNorm(1 group) -> conv2 -> gelu -> conv3 -> gelu``.
The GroupNorm takes its mean and variance over every frame it is given, so encoding a padded
batch the way ``transformers`` does shifts every frame of the shorter clips (3 of 40 held-out
transcripts changed in our test). Everything after the GroupNorm only looks at padding through
frames that are masked anyway (the convolutions have no padding; attention gets a key mask).

So :func:`encode` runs ``conv1 -> tanh`` on the padded batch (conv1 has no padding: a clip's
frames read only its own samples), takes the GroupNorm's statistics over each clip's own frames
(:func:`groupnorm_each_clip`), zeroes the frames past each clip's end, and runs everything else
batched with a frame mask. Valid frames match encoding each clip alone up to float rounding (max
|diff| 5e-6 on base-en). Training, evaluation and transcription all use it, so the adapter is
trained on exactly the encoder it is evaluated with. The stem is batched, not run clip by clip: one
feature-extractor call, copy and three kernels per clip would be ~1,000 small launches per forward pass at batch
256 on a GPU.

:func:`stem_inputs` (the padded samples and their lengths, on the host) is split from
:func:`encode_padded` (everything on the device) so a training loop can prepare the next batch
in another thread while this one runs (:class:`lora.data.batching.BatchLoader`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def frames(conv1_frames: int) -> int:
    """Encoder frames for ``conv1_frames`` stem frames (conv2: kernel 7 stride 3; conv3: kernel 3 stride 2)."""
    return ((conv1_frames - 7) // 3 + 1 - 3) // 2 + 1


def conv1_frames(model, samples: torch.Tensor) -> torch.Tensor:
    """Frames out of conv1 for clips of ``samples`` samples (it has no padding)."""
    conv1 = model.get_encoder().conv1
    return (samples - conv1.kernel_size[0]) // conv1.stride[0] + 1


def encoder_frames(model, samples: torch.Tensor) -> torch.Tensor:
    """Encoder frames (what the decoder attends to) for clips of ``samples`` samples."""
    return frames(conv1_frames(model, samples))


def stem_inputs(processor, audios: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input values ``[batch, samples]`` zero-padded, samples per clip ``[batch]``) on the host: what the
    feature extractor makes of each clip (normalized per clip where the processor says so).

    Moonshine's extractor only pads (``do_normalize`` false): that is done here directly, 10x less Python per clip
    (it matters when another thread is computing); any other extractor is called as it is.
    """
    fe = processor.feature_extractor
    samples = torch.tensor([a.shape[-1] for a in audios], dtype=torch.long)
    if getattr(fe, "do_normalize", True) or getattr(fe, "padding_side", "right") != "right" or fe.padding_value != 0:
        batch = fe(list(audios), sampling_rate=16000, padding=True, return_attention_mask=True, return_tensors="pt")
        return batch["input_values"], samples
    values = torch.zeros((len(audios), int(samples.max())), dtype=torch.float32)
    for row, a in zip(values, audios, strict=True):
        row[: a.shape[-1]] = torch.from_numpy(np.asarray(a, dtype=np.float32))
    return values, samples


def groupnorm_each_clip(norm: torch.nn.GroupNorm, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``norm`` (one group) applied to each clip of ``x`` ``[batch, channels, frames]`` with the statistics of its
    own ``valid`` frames ``[batch, frames]``, as if it had been alone; frames past a clip's end come out zero.
    Computed in fp32, as autocast runs GroupNorm. ``x`` is overwritten where no gradient needs it (the stem has
    no trainable weight): a batch then costs no copy of the stem's output beyond ``x`` itself."""
    m = valid[:, None, :].to(torch.float32)
    x = x.float()
    count = m.sum((1, 2), keepdim=True) * x.shape[1]
    x = x * m if x.requires_grad else x.mul_(m)
    mean = x.sum((1, 2), keepdim=True) / count
    x = (x - mean) * m if x.requires_grad else x.sub_(mean).mul_(m)
    var = (x * x).sum((1, 2), keepdim=True) / count
    scale = torch.rsqrt(var + norm.eps) * norm.weight.float()[None, :, None]
    if x.requires_grad:
        return x * scale + norm.bias.float()[None, :, None] * m
    return x.mul_(scale).add_(norm.bias.float()[None, :, None]).mul_(m)


def key_mask(model, mask: torch.Tensor):
    """The attention mask for frames ``mask`` ``[batch, frames]``, as SDPA reads it (``[batch, 1, 1, frames]``,
    True = attend): transformers' mask helpers first ask the device whether any frame is masked at all, a
    synchronisation that stops the host from queueing work ahead of a GPU. Other attention kernels get what
    transformers makes of the 2-D mask."""
    from lora.model.attention import ALIGNED_SDPA

    if getattr(model.config, "_attn_implementation", None) in ("sdpa", ALIGNED_SDPA):
        return mask.bool()[:, None, None, :]
    return mask


def encode_padded(model, values: torch.Tensor, samples: torch.Tensor, drop: torch.Tensor | None = None):
    """Encoder states ``[batch, frames, hidden]`` and the frame mask for :func:`stem_inputs`' output (moved to the
    model's device by the caller). Runs under the caller's grad mode and autocast: training calls it with gradients
    on. No host synchronisation: lengths and masks stay on the device (:func:`key_mask`). ``drop``: frames zeroed
    after the stem (:class:`lora.training.masking.TimeMask`, training only)."""
    from transformers.masking_utils import create_bidirectional_mask
    from transformers.models.moonshine.modeling_moonshine import MoonshineEncoderModelOutput

    enc = model.get_encoder()
    hidden = torch.tanh(enc.conv1(values[:, None]))
    stem = conv1_frames(model, samples)
    valid = torch.arange(hidden.shape[2], device=hidden.device)[None] < stem[:, None]
    hidden = groupnorm_each_clip(enc.groupnorm, hidden, valid)
    hidden = torch.nn.functional.gelu(enc.conv2(hidden))
    hidden = torch.nn.functional.gelu(enc.conv3(hidden)).permute(0, 2, 1)
    mask = (torch.arange(hidden.shape[1], device=hidden.device)[None] < frames(stem)[:, None]).long()
    if drop is not None:
        hidden = hidden.masked_fill(drop.to(hidden.device, non_blocking=True)[..., None], 0.0)
    attention = create_bidirectional_mask(config=enc.config, inputs_embeds=hidden, attention_mask=key_mask(model, mask),
                                          encoder_hidden_states=hidden)
    positions = torch.arange(hidden.shape[1], device=hidden.device)[None]
    rotary = enc.rotary_emb(hidden, position_ids=positions)
    for layer in enc.layers:
        hidden = layer(hidden, attention_mask=attention, position_ids=positions, position_embeddings=rotary)
    return MoonshineEncoderModelOutput(last_hidden_state=enc.layer_norm(hidden), attention_mask=mask)


def encode(model, processor, audios: Sequence[np.ndarray], device):
    """Encoder states ``[batch, frames, hidden]`` and the frame mask, for 16 kHz clips of any lengths, by the
    model's family (:mod:`lora.model.family`: this module for v1, :mod:`lora.model.streaming` for v2)."""
    from lora.model.family import family_of

    values, samples = stem_inputs(processor, audios)
    return family_of(model).encoder().encode_padded(model, values.to(device), samples.to(device))
