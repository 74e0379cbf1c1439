"""Batched encoding that padding cannot change."""

from __future__ import annotations

import pytest
import torch

from lora.model.encoder import encode, frames
from tests.conftest import tone


@pytest.mark.parametrize("samples", [1600, 16000, 16001, 48000 + 383, 160000])
def test_frames_match_the_model_formula(tiny, samples):
    model, _ = tiny
    assert frames((samples - 127) // 64 + 1) == model._get_feat_extract_output_lengths(samples)


def _alone(model, audio):
    with torch.no_grad():
        return model.get_encoder()(input_values=torch.from_numpy(audio)[None]).last_hidden_state[0]


def test_batched_encoding_equals_encoding_each_clip_alone(tiny):
    model, processor = tiny
    model.eval()
    audios = [tone(2.0, 300), tone(0.4, 500), tone(1.3, 700, amp=0.05)]
    with torch.no_grad():
        out = encode(model, processor, audios, "cpu")
    for i, a in enumerate(audios):
        alone = _alone(model, a)
        assert int(out.attention_mask[i].sum()) == alone.shape[0]
        torch.testing.assert_close(out.last_hidden_state[i, : alone.shape[0]], alone, atol=1e-5, rtol=1e-5)


def test_the_model_own_padded_batch_differs(tiny):
    """Why lora.model.encoder exists: transformers' padded batch changes the shorter clips (GroupNorm sees padding)."""
    model, processor = tiny
    model.eval()
    audios = [tone(2.0, 300), tone(0.4, 500, amp=0.05)]
    batch = processor.feature_extractor(audios, sampling_rate=16000, padding=True, return_attention_mask=True,
                                        return_tensors="pt")
    with torch.no_grad():
        padded = model.get_encoder()(**batch).last_hidden_state[1]
    alone = _alone(model, audios[1])
    assert (padded[: alone.shape[0]] - alone).abs().max() > 1e-3


def test_gradients_reach_the_encoder_layers(tiny):
    model, processor = tiny
    model.train()
    out = encode(model, processor, [tone(1.0), tone(0.6, 400)], "cpu")
    out.last_hidden_state[out.attention_mask.bool()].sum().backward()
    assert model.get_encoder().layers[0].self_attn.q_proj.weight.grad is not None


def test_stem_inputs_are_what_the_feature_extractor_makes(tiny):
    from lora.model.encoder import stem_inputs

    _, processor = tiny
    audios = [tone(0.7, 300), tone(0.2, 500), tone(1.1, 700, amp=0.05)]
    values, samples = stem_inputs(processor, audios)
    ref = processor.feature_extractor(audios, sampling_rate=16000, padding=True, return_attention_mask=True,
                                      return_tensors="pt")
    assert torch.equal(values, ref["input_values"]) and torch.equal(samples, ref["attention_mask"].sum(1))
