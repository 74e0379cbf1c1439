"""Normalizer, WER, token-weighted loss, batched transcription."""

from __future__ import annotations

import pytest
import torch

from lora.data.batching import collate, encode_labels
from lora.data.text import normalize
from lora.evaluation.evaluate import EvalContext, eval_loss, evaluate, max_new_tokens, transcribe, wer_metrics
from tests.conftest import tone


def test_normalizer_handles_case_punctuation_numbers():
    assert normalize("Ever tried. Ever failed!") == "ever tried ever failed"
    assert normalize("twenty five items") == normalize("25 items")
    assert normalize("Mr. Smith") == normalize("mister smith")


def test_wer_normalized_and_raw():
    m = wer_metrics(["Hello, World.", "I have 2 cats"], ["hello world", "I have two cats"])
    assert m["wer"] == 0.0
    assert m["wer_raw"] == pytest.approx(3 / 6)
    m = wer_metrics(["a b c d"], ["a x c"])
    assert m["wer"] == pytest.approx(2 / 4) and m["utterances"] == 1


def test_labels_end_with_eos_and_have_no_bos(tiny):
    _, processor = tiny
    ids = encode_labels(processor.tokenizer, "Hello there.")
    assert ids[-1] == 2 and ids[0] != 1
    assert processor.tokenizer.decode(ids, skip_special_tokens=True) == "Hello there."


def test_eval_loss_is_token_weighted_over_the_whole_split(tiny):
    """Batched loss equals the sum of per-utterance token losses over the total token count."""
    model, processor = tiny
    audios = [tone(1.0, 200), tone(1.5, 300), tone(0.7, 400)]
    texts = ["a", "a much longer sentence with many more tokens in it", "mid length text"]
    batched = eval_loss(model, EvalContext(processor, "cpu", batch_size=3), audios, texts)
    total, count = 0.0, 0
    model.eval()
    for a, t in zip(audios, texts, strict=True):
        batch = collate(processor, [a], [encode_labels(processor.tokenizer, t)])
        with torch.no_grad():
            out = model(**batch)
        n = int((batch["labels"] != -100).sum())
        total += float(out.loss) * n
        count += n
    assert batched == pytest.approx(total / count, rel=1e-5)


def test_transcribe_keeps_input_order_and_is_deterministic(tiny):
    model, processor = tiny
    audios = [tone(0.5 + i / 4, 200 + 20 * i) for i in range(5)]
    a = transcribe(model, EvalContext(processor, "cpu", batch_size=2), audios)
    b = transcribe(model, EvalContext(processor, "cpu", batch_size=2), audios)
    assert a == b and len(a) == 5


@pytest.mark.parametrize("num_beams", [1, 2])
def test_one_pass_gives_the_same_loss_and_transcripts_as_separate_passes(tiny, num_beams):
    model, processor = tiny
    audios = [tone(0.5 + i / 4, 200 + 20 * i) for i in range(5)]
    texts = ["a", "b c", "d e f", "g", "h i"]
    loss, hyps = evaluate(model, EvalContext(processor, "cpu", batch_size=2, num_beams=num_beams), audios, texts, True)
    assert loss == eval_loss(model, EvalContext(processor, "cpu", batch_size=2), audios, texts)
    assert hyps == transcribe(model, EvalContext(processor, "cpu", batch_size=2, num_beams=num_beams), audios)


@pytest.mark.slow
@pytest.mark.offline_model
def test_batched_transcription_equals_unbatched_greedy(offline_dir):
    """On real model and real speech of different lengths: batch 8 and 16 == one at a time with plain generate."""
    import shutil

    from lora.data.synth import VOICES, default_sentences, speak
    from lora.model.load import load_model, load_processor

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    model, processor = load_model(str(offline_dir)).eval(), load_processor(str(offline_dir))
    audios = [speak(t, VOICES[i % len(VOICES)]) for i, t in enumerate(default_sentences()[:24])]
    batched = {bs: transcribe(model, EvalContext(processor, "cpu", batch_size=bs), audios) for bs in (8, 16)}
    single = []
    for a in audios:
        with torch.no_grad():
            ids = model.generate(input_values=torch.from_numpy(a)[None], max_new_tokens=max_new_tokens(a.size / 16000))
        single.append(processor.tokenizer.decode(ids[0], skip_special_tokens=True).strip())
    assert batched[8] == single and batched[16] == single
