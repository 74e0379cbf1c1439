"""Our loss (lora.model.loss) against a reference computed prefix by prefix, as decoding sees the labels."""

from __future__ import annotations

import pytest
import torch

from lora.data.batching import encode_labels, pad_labels
from lora.model.encoder import encode
from lora.model.loss import decoder_inputs, token_cross_entropy
from tests.conftest import tone


def _reference(model, enc, labels: list[list[int]]) -> float:
    """-log p(t_i | <s> t_1 .. t_{i-1}) summed over every token, one prefix at a time: what greedy decoding scores."""
    start = model.config.decoder_start_token_id
    total = 0.0
    for row, target in enumerate(labels):
        valid = int(enc.attention_mask[row].sum())  # this clip's frames, without the batch's padding
        one = type(enc)(last_hidden_state=enc.last_hidden_state[row:row + 1, :valid],
                        attention_mask=enc.attention_mask[row:row + 1, :valid])
        for i, token in enumerate(target):
            prefix = torch.tensor([[start, *target[:i]]])
            logits = model(encoder_outputs=one, decoder_input_ids=prefix).logits[0, -1].float()
            total -= float(torch.log_softmax(logits, -1)[token])
    return total


@torch.no_grad()
def test_loss_is_each_token_scored_after_its_own_prefix(tiny):
    model, processor = tiny
    model.eval()
    texts = ["one two three", "four"]  # different lengths: padding must not count
    labels = [encode_labels(processor.tokenizer, t) for t in texts]
    enc = encode(model, processor, [tone(0.8, 200), tone(0.5, 300)], "cpu")
    total, count = token_cross_entropy(model, enc, pad_labels(labels))
    assert count == sum(len(x) for x in labels)
    assert float(total) == pytest.approx(_reference(model, enc, labels), rel=1e-4)


@torch.no_grad()
def test_reference_tells_a_double_shift_apart(tiny, monkeypatch):
    """The comparison above can fail: labels shifted twice (transformers' bug before 5.15) give another loss."""
    import lora.model.loss as L

    model, processor = tiny
    model.eval()
    labels = [encode_labels(processor.tokenizer, "one two three four")]
    enc = encode(model, processor, [tone(0.8, 200)], "cpu")
    start, pad = model.config.decoder_start_token_id, model.config.pad_token_id
    monkeypatch.setattr(L, "decoder_inputs", lambda y, s, p: decoder_inputs(decoder_inputs(y, s, p), s, p))
    twice, _ = token_cross_entropy(model, enc, pad_labels(labels))
    assert abs(float(twice) - _reference(model, enc, labels)) > 1e-2
    monkeypatch.undo()
    short = labels[0][:2]  # padded with IGNORE, read by the decoder as pad
    assert decoder_inputs(pad_labels(labels + [short]), start, pad)[1].tolist()[:4] == [start, *short, pad]
