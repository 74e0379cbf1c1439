"""The imported base-en checkpoint: loads offline, matches ONNX Runtime, transcribes real speech."""

from __future__ import annotations

import numpy as np
import pytest

from lora.errors import ModelError

pytestmark = pytest.mark.offline_model


def _ort_sessions():
    import onnxruntime as ort

    from lora.model.offline import find_wheel_files

    files = find_wheel_files()
    return ort.InferenceSession(str(files.encoder)), ort.InferenceSession(str(files.decoder))


def _ort_greedy(enc, dec, audio: np.ndarray, max_len: int = 60) -> list[int]:
    hidden = enc.run(None, {"input_values": audio[None]})[0]
    names = [i.name for i in dec.get_inputs() if i.name.startswith("past_key_values")]
    past = {n: np.zeros((0, 8, 1, 52), dtype=np.float32) for n in names}
    tokens, ids = [1], [[1]]
    for step in range(max_len):
        logits, *present = dec.run(None, {"input_ids": ids, "encoder_hidden_states": hidden,
                                          "use_cache_branch": [step > 0], **past})
        nxt = int(logits[0, -1].argmax())
        tokens.append(nxt)
        if nxt == 2:
            break
        ids = [[nxt]]
        for k, v in zip(names, present, strict=True):
            if step == 0 or ".decoder." in k:
                past[k] = v
    return tokens


@pytest.fixture(scope="module")
def offline_dir(tmp_path_factory):
    """A fresh import (not the cache's, which an earlier version of the importer may have written): these tests are
    the importer's."""
    from lora.model.offline import import_model

    return import_model(tmp_path_factory.mktemp("import") / "base-en")


@pytest.fixture(scope="module")
def model_and_processor(offline_dir):
    from transformers import AutoProcessor, MoonshineForConditionalGeneration

    return (MoonshineForConditionalGeneration.from_pretrained(offline_dir).eval(),
            AutoProcessor.from_pretrained(offline_dir))


def test_directory_loads_offline_with_plain_transformers(offline_dir, model_and_processor):
    import json
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    names = {p.name for p in offline_dir.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "import_info.json"} <= names
    model, processor = model_and_processor
    assert model.config.hidden_size == 416 and model.config.decoder_start_token_id == 1
    assert processor.feature_extractor.sampling_rate == 16000
    info = json.loads((offline_dir / "import_info.json").read_text())
    assert info["parameters"] == len(model.state_dict())


def test_beckett_transcript(model_and_processor, beckett):
    from lora.data.text import normalize
    from lora.evaluation.evaluate import EvalContext, transcribe

    model, processor = model_and_processor
    text = transcribe(model, EvalContext(processor, "cpu", batch_size=1), [beckett])[0]
    assert normalize(text) == normalize("Ever tried. Ever failed. No matter. Try again. Fail again. Fail better.")


def test_encoder_and_first_logits_match_ort(model_and_processor, beckett, espeak_clips):
    """Same float32 weights as ORT computes with; differences are only kernel summation order.

    Measured: encoder max |diff| 1.5e-4 on beckett.wav (10 s, outputs up to 6.7) and 7e-6 on espeak
    clips; first-step logits 1.1e-5 (logits up to 17). Allowed: 1e-3 and 1e-4, about 7x headroom.
    """
    import torch
    from transformers.models.moonshine.modeling_moonshine import MoonshineEncoderModelOutput as EncoderOut

    model, _ = model_and_processor
    enc, dec = _ort_sessions()
    for audio in [beckett] + [a for _, a in espeak_clips]:
        ours = model.model.encoder(torch.from_numpy(audio)[None]).last_hidden_state.detach().numpy()
        theirs = enc.run(None, {"input_values": audio[None]})[0]
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() <= 1e-3
        names = [i.name for i in dec.get_inputs() if i.name.startswith("past_key_values")]
        past = {n: np.zeros((0, 8, 1, 52), dtype=np.float32) for n in names}
        ort_logits = dec.run(None, {"input_ids": [[1]], "encoder_hidden_states": theirs,
                                    "use_cache_branch": [False], **past})[0]
        with torch.no_grad():
            our_logits = model(encoder_outputs=EncoderOut(last_hidden_state=torch.from_numpy(theirs)),
                               decoder_input_ids=torch.tensor([[1]])).logits.numpy()
        assert np.abs(our_logits - ort_logits).max() <= 1e-4


@pytest.mark.slow
def test_greedy_tokens_identical_to_ort(model_and_processor, beckett, espeak_clips):
    import torch

    model, processor = model_and_processor
    enc, dec = _ort_sessions()
    for audio in [beckett] + [a for _, a in espeak_clips]:
        with torch.no_grad():
            ours = model.generate(torch.from_numpy(audio)[None], max_new_tokens=60)[0].tolist()
        assert ours == _ort_greedy(enc, dec, audio)


def test_unknown_source_lists_valid(tmp_path):
    from lora.model.offline import import_model

    with pytest.raises(ModelError, match="valid sources: moonshine-cpp"):
        import_model(tmp_path / "x", source="nope")


def test_refuses_non_empty_output_without_force(tmp_path):
    from lora.model.offline import import_model

    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ModelError, match="--force"):
        import_model(tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_missing_wheel_names_pip_command(monkeypatch):
    import importlib.util

    from lora.model import offline

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "moonshine_cpp" else real(name, *a))
    with pytest.raises(ModelError, match="pip install"):
        offline.find_wheel_files()


def test_corrupted_ort_names_the_file(tmp_path):
    from lora.model.offline import find_wheel_files
    from lora.model.ort_weights import read_ort

    src = find_wheel_files().encoder.read_bytes()
    bad = tmp_path / "encoder_model.ort"
    bad.write_bytes(src[: len(src) // 3])
    with pytest.raises(ModelError, match="encoder_model.ort"):
        read_ort(bad)
    garbage = tmp_path / "garbage.ort"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match="garbage.ort"):
        read_ort(garbage)


def test_unmapped_parameter_fails_loudly(offline_dir):
    from lora.model.offline import find_wheel_files, map_weights
    from lora.model.ort_weights import read_ort

    files = find_wheel_files()
    graphs = {"enc": read_ort(files.encoder), "dec": read_ort(files.decoder)}
    with pytest.raises(ModelError, match="no ORT weight"):
        map_weights({"model.encoder.extra.weight": (4, 4)}, graphs)
    with pytest.raises(ModelError, match="shape mismatch"):
        map_weights({"model.encoder.layers.0.self_attn.q_proj.weight": (416, 8)}, graphs)
