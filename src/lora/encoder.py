"""Moonshine's encoder on a batch of clips of different lengths, without letting padding change the result.

Moonshine's stem is ``conv1 -> tanh -> GroupNorm(1 group) -> conv2 -> gelu -> conv3 -> gelu``.
The GroupNorm takes its mean and variance over every frame it is given, so encoding a padded
batch the way ``transformers`` does shifts every frame of the shorter clips (3 of 40 held-out
transcripts changed in our test). Everything after the GroupNorm only looks at padding through
frames that are masked anyway (the convolutions have no padding; attention gets a key mask).

So :func:`encode` runs ``conv1 -> tanh -> GroupNorm`` on each clip alone (about 1.5% of the
encoder's work) and everything else batched with a frame mask. Valid frames match encoding each
clip alone up to float rounding (max |diff| 5e-6 on base-en); it is 1.35x faster than a clip at
a time on a 2-core CPU. Training, evaluation and transcription all use it, so the adapter is
trained on exactly the encoder it is evaluated with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def frames(conv1_frames: int) -> int:
    """Encoder frames for ``conv1_frames`` stem frames (conv2: kernel 7 stride 3; conv3: kernel 3 stride 2)."""
    return ((conv1_frames - 7) // 3 + 1 - 3) // 2 + 1


def encode(model, processor, audios: Sequence[np.ndarray], device):
    """Encoder states ``[batch, frames, hidden]`` and the frame mask, for 16 kHz clips of any lengths.

    Runs under the caller's grad mode and autocast: training calls it with gradients on.
    """
    from transformers.masking_utils import create_bidirectional_mask
    from transformers.models.moonshine.modeling_moonshine import MoonshineEncoderModelOutput

    enc = model.get_encoder()
    stems = []
    for a in audios:
        x = processor.feature_extractor(a, sampling_rate=16000, return_tensors="pt").input_values.to(device)
        stems.append(enc.groupnorm(torch.tanh(enc.conv1(x[:, None])))[0])  # alone: no padding in the statistics
    width = max(s.shape[1] for s in stems)
    hidden = stems[0].new_zeros((len(stems), stems[0].shape[0], width))
    for i, s in enumerate(stems):
        hidden[i, :, : s.shape[1]] = s
    hidden = torch.nn.functional.gelu(enc.conv2(hidden))
    hidden = torch.nn.functional.gelu(enc.conv3(hidden)).permute(0, 2, 1)
    lengths = torch.tensor([frames(s.shape[1]) for s in stems], device=device)
    mask = (torch.arange(hidden.shape[1], device=device)[None] < lengths[:, None]).long()
    attention = create_bidirectional_mask(config=enc.config, inputs_embeds=hidden, attention_mask=mask,
                                          encoder_hidden_states=hidden)
    positions = torch.arange(hidden.shape[1], device=device)[None]
    rotary = enc.rotary_emb(hidden, position_ids=positions)
    for layer in enc.layers:
        hidden = layer(hidden, attention_mask=attention, position_ids=positions, position_embeddings=rotary)
    return MoonshineEncoderModelOutput(last_hidden_state=enc.layer_norm(hidden), attention_mask=mask)
