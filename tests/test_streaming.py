"""Moonshine v2 (streaming): loading by config, batching that padding cannot change, the decoder's in-place add kept
off the caller's states, LoRA targets, the random-weights mark, and the hub path (mocked, no network)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lora.errors import ModelError
from lora.model.encoder import encode
from lora.model.load import load_model, load_processor, resolve_model

RNG = np.random.default_rng(0)
CLIPS = [RNG.standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 9999, 4321, 12345)]


@pytest.fixture()
def v2(tiny_v2_dir):
    return load_model(str(tiny_v2_dir)).eval(), load_processor(str(tiny_v2_dir))


def test_a_v2_checkpoint_loads_the_v2_classes_and_says_its_weights_are_random(tiny_v2_dir, v2):
    from lora.model.family import family_of
    from lora.model.random_init import random_weights, weights_line

    model, processor = v2
    assert type(model).__name__ == "MoonshineStreamingForConditionalGeneration"
    assert type(processor).__name__ == "MoonshineStreamingProcessor"
    assert family_of(model).model_type == "moonshine_streaming"
    assert "no quality claim" in weights_line(random_weights(tiny_v2_dir))
    assert weights_line(None).startswith("learned weights")


def _runtime_encoder(model, clip: np.ndarray) -> torch.Tensor:
    """The clip alone through the encoder Moonshine's runtime runs: transformers' embedder on its whole frames, then
    the layers with the windows ``moonshine_voice``'s exporter bakes into the exported graph."""
    from moonshine_voice.lora.export import Encoder

    enc = model.get_encoder()
    values = torch.from_numpy(clip[: clip.size // 80 * 80])[None]
    features, _ = enc.embedder(values, padding_mask=torch.ones_like(values, dtype=torch.bool))
    return Encoder(enc, [tuple(w) for w in enc.config.sliding_windows])(features)[0]


@torch.no_grad()
def test_batched_encoding_equals_each_clip_alone_in_the_runtime_s_encoder(v2):
    from lora.model.streaming import encoder_frames

    model, processor = v2
    batch = encode(model, processor, CLIPS, "cpu")
    for i, clip in enumerate(CLIPS):
        alone = _runtime_encoder(model, clip)
        frames = int(batch.attention_mask[i].sum())
        assert frames == alone.shape[0] == int(encoder_frames(model, torch.tensor(clip.size)))
        torch.testing.assert_close(batch.last_hidden_state[i, :frames], alone, atol=2e-5, rtol=1e-4)


@torch.no_grad()
def test_transformers_windows_are_a_frame_narrower_than_the_runtime_s(v2):
    """Why lora.model.streaming builds its own window mask: transformers' reads (16, 4) as 15 behind, 3 ahead."""
    model, _ = v2
    values = torch.from_numpy(CLIPS[0])[None]
    theirs = model.get_encoder()(values, attention_mask=torch.ones_like(values, dtype=torch.long)).last_hidden_state
    assert not torch.allclose(theirs[0], _runtime_encoder(model, CLIPS[0]), atol=1e-4)


@torch.no_grad()
def test_without_a_mask_transformers_attends_past_the_windows(v2):
    """Why the mask is always built: the same clip without ``attention_mask`` runs with no sliding window."""
    model, _ = v2
    values = torch.from_numpy(CLIPS[0])[None]
    windowed = model.get_encoder()(values, attention_mask=torch.ones_like(values, dtype=torch.long))
    unbounded = model.get_encoder()(values)
    assert not torch.allclose(windowed.last_hidden_state, unbounded.last_hidden_state, atol=1e-4)


@torch.no_grad()
def test_transcripts_batched_equal_transcripts_alone(v2):
    model, processor = v2
    batch = model.generate(encoder_outputs=encode(model, processor, CLIPS, "cpu"), max_new_tokens=8, do_sample=False)
    for row, clip in zip(batch, CLIPS, strict=True):
        alone = model.generate(encoder_outputs=encode(model, processor, [clip], "cpu"), max_new_tokens=8,
                               do_sample=False)[0]
        assert torch.equal(row[: alone.shape[0]], alone)


@torch.no_grad()
def test_the_decoder_leaves_the_encoder_states_as_they_were(tiny_v2_dir, v2):
    """transformers' v2 decoder adds its position embedding to the states in place; loaded here, it gets a copy."""
    from transformers import MoonshineStreamingForConditionalGeneration

    from lora.model.loss import token_cross_entropy

    model, processor = v2
    labels = torch.tensor([[5, 6, 2], [7, 2, -100]])
    enc = encode(model, processor, CLIPS[:2], "cpu")
    before = enc.last_hidden_state.clone()
    token_cross_entropy(model, enc, labels)
    model.generate(encoder_outputs=enc, max_new_tokens=4, do_sample=False)
    assert torch.equal(enc.last_hidden_state, before)
    plain = MoonshineStreamingForConditionalGeneration.from_pretrained(tiny_v2_dir).eval()
    enc = encode(plain, processor, CLIPS[:2], "cpu")
    before = enc.last_hidden_state.clone()
    token_cross_entropy(plain, enc, labels)
    assert not torch.equal(enc.last_hidden_state, before), "transformers fixed the in-place add: drop prepare_model"


def test_lora_targets_both_stacks_and_proj_and_reloads_with_plain_peft(tiny_v2_dir, v2, tmp_path):
    from peft import PeftModel
    from transformers import MoonshineStreamingForConditionalGeneration

    from lora.model.adapter import attach_lora, target_regex

    model, processor = v2
    pattern = target_regex(model, "both", ("q_proj", "v_proj", "fc1", "proj"))
    encoder_only = target_regex(model, "encoder")
    assert not re.fullmatch(encoder_only, "model.decoder.proj") and re.fullmatch(pattern, "model.decoder.proj")
    peft_model = attach_lora(model, 2, 4, 0.0, pattern)
    adapted = {n.split(".lora_A")[0] for n, _ in peft_model.named_parameters() if ".lora_A" in n}
    assert any(".encoder.layers." in n for n in adapted) and any(".decoder.layers." in n for n in adapted)
    assert any(n.endswith("decoder.proj") for n in adapted)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    peft_model.save_pretrained(tmp_path / "adapter")
    plain = MoonshineStreamingForConditionalGeneration.from_pretrained(tiny_v2_dir).eval()
    reloaded = PeftModel.from_pretrained(plain, str(tmp_path / "adapter")).eval()
    values = torch.from_numpy(CLIPS[1][:9920])[None]
    ids = torch.tensor([[1, 5, 6]])
    with torch.no_grad():
        ours = peft_model.eval()(input_values=values, attention_mask=torch.ones_like(values, dtype=torch.long),
                                 decoder_input_ids=ids).logits
        theirs = reloaded(input_values=values, attention_mask=torch.ones_like(values, dtype=torch.long),
                          decoder_input_ids=ids).logits
    torch.testing.assert_close(ours, theirs)


def test_a_layer_name_the_model_does_not_have_is_refused(tiny_dir, v2):
    from lora.model.adapter import target_regex

    with pytest.raises(ModelError, match="--target-modules proj: no such linear layer .*first generation"):
        target_regex(load_model(str(tiny_dir)), "both", ("q_proj", "proj"))
    with pytest.raises(ModelError, match="--target-modules proj: no such linear layer in the encoder scope"):
        target_regex(v2[0], "encoder", ("q_proj", "proj"))


def test_a_checkpoint_of_another_model_type_is_refused_before_loading(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    with pytest.raises(ModelError, match="model type 'whisper' is not a Moonshine model this toolkit tunes"):
        resolve_model(str(tmp_path))


@pytest.mark.parametrize("hub_id", ["UsefulSensors/moonshine-streaming-tiny", "moonshine-ai/moonshine-streaming-tiny"])
def test_a_v2_hub_id_resolves_to_the_v2_classes_from_the_hub_cache(hub_id, tiny_v2_dir, tmp_path, monkeypatch):
    """The code a user with internet runs, on a hub cache laid out as huggingface_hub lays it out (no network)."""
    import huggingface_hub.constants

    snapshot = tmp_path / f"models--{hub_id.replace('/', '--')}" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_v2_dir, snapshot, ignore=shutil.ignore_patterns("random_init.json"))
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert resolve_model(hub_id) == hub_id
    assert type(load_model(hub_id)).__name__ == "MoonshineStreamingForConditionalGeneration"
    assert type(load_processor(hub_id)).__name__ == "MoonshineStreamingProcessor"


def test_random_init_shapes_follow_the_model_cards_layers_and_widths():
    from lora.model.random_init import SHAPES, streaming_config

    cfgs = {name: streaming_config(shape) for name, shape in SHAPES.items()}
    assert (cfgs["streaming-small"].encoder_config.hidden_size, cfgs["streaming-small"].hidden_size) == (620, 512)
    assert (cfgs["streaming-medium"].encoder_config.hidden_size, cfgs["streaming-medium"].hidden_size) == (768, 640)
    assert [c.num_hidden_layers for c in cfgs.values()] == [6, 10, 14]
    for c in cfgs.values():
        assert len(c.encoder_config.sliding_windows) == c.encoder_config.num_hidden_layers
    from transformers import MoonshineStreamingEncoderConfig

    default = MoonshineStreamingEncoderConfig()
    tiny = cfgs["streaming-tiny"].encoder_config
    assert (tiny.hidden_size, tiny.num_hidden_layers, tiny.sliding_windows) == (
        default.hidden_size, default.num_hidden_layers, default.sliding_windows)


def _teach(model_dir: Path, manifest: Path, out: Path, steps: int = 400) -> Path:
    """A random v2 stand-in taught the clips of ``manifest`` with full weights (AdamW, one batch of every clip), so
    that it writes words and stops: then an export can be compared with PyTorch on clips it has learned. Its mark
    stays: it is still a model of random origin, no quality claim."""
    import soundfile as sf

    from lora.data.batching import encode_labels, pad_labels
    from lora.model.encoder import stem_inputs
    from lora.model.loss import token_cross_entropy
    from lora.model.streaming import encode_padded

    model, processor = load_model(str(model_dir)), load_processor(str(model_dir))
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    clips = [sf.read(manifest.parent / r["audio"], dtype="float32")[0] for r in rows]
    labels = pad_labels([encode_labels(processor.tokenizer, r["text"]) for r in rows])
    values, samples = stem_inputs(processor, clips)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        total, count = token_cross_entropy(model, encode_padded(model, values, samples), labels)
        optimizer.zero_grad()
        (total / count).backward()
        optimizer.step()
    model.eval().save_pretrained(out)
    processor.save_pretrained(out)
    shutil.copy(model_dir / "random_init.json", out / "random_init.json")
    return out


@pytest.mark.slow  # teaching, the job, export_onnx, verify_run and report in subprocesses: about 2 minutes
def test_a_taught_v2_stand_in_tunes_exports_to_moonshine_voice_and_verifies(tiny_v2_dir, tmp_path):
    """The same job as v1 on a v2 checkpoint (time masks on), then the export to moonshine-voice's streaming folder:
    the float graphs, the chunked frontend and moonshine-voice's transcripts all equal PyTorch's on the clips the
    stand-in learned; verify_run passes the run with its runtime checks and the random weights as a warning; the
    report leads with them; an export without --allow-random is refused."""
    import subprocess
    import sys

    from lora.runtime.moonshine_cpp import runtime_unavailable
    from tests.conftest import tone_manifest

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

    def run(*args):
        return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, cwd=root,
                              timeout=600)

    (tmp_path / "clips").mkdir()
    manifest = tone_manifest(tmp_path / "clips", speakers=5, per=6)
    taught = _teach(tiny_v2_dir, manifest, tmp_path / "taught")
    out = tmp_path / "run"
    proc = run("lora.runners.real_small", "--model", str(taught), "--source", f"manifest:{manifest}",
               "--samples", "0", "--split-ratios", "0.6,0.2,0.2", "--max-steps", "8", "--eval-every", "4",
               "--batch-size", "3", "--warmup-steps", "1", "--patience", "0", "--lora-r", "4", "--lora-alpha", "8",
               "--learning-rate", "1e-3", "--mask-time-prob", "0.3", "--mask-time-length", "2", "--device", "cpu",
               "--canary", "none", "--output-dir", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "warning: RANDOM WEIGHTS (test-4-layers, seed 0): mechanics only, no quality claim" in proc.stdout
    m = json.loads((out / "real_metrics.json").read_text())
    assert m["model"]["family"] == "moonshine_streaming" and m["model"]["random_weights"]["seed"] == 0
    assert m["baseline"]["wer"] < 0.2, "the stand-in did not learn its clips"
    refused = run("lora.scripts.export_onnx", "--run", str(out), "--output", str(out / "runtime"))
    assert refused.returncode == 2 and "pass --allow-random" in refused.stderr and not (out / "runtime").exists()
    why = runtime_unavailable("moonshine-voice")
    if why:
        pytest.skip(f"moonshine-voice cannot run here: {why}")
    export = run("lora.scripts.export_onnx", "--run", str(out), "--output", str(out / "runtime"), "--allow-random")
    assert export.returncode == 0, export.stdout[-3000:] + export.stderr[-3000:]
    info = json.loads((out / "runtime" / "export.json").read_text())
    assert sorted(info["files"]) == ["adapter.ort", "cross_kv.ort", "decoder_kv.ort", "encoder.ort", "frontend.ort",
                                     "streaming_config.json", "tokenizer.bin"]
    assert all(c["passed"] for c in info["verification"]["checks"]) and len(info["verification"]["checks"]) == 5
    assert len(info["cost"]["quiet"]["clips"]) == 7  # the clips without speech, in the runtime too
    assert info["verification"]["parity"]["max_chunked_frontend_diff"] < 1e-4
    # moonshine-voice reads whole 80 ms chunks and never emits the last 320 ms of frames: it writes what the graphs
    # write on that audio (on the whole clip it may differ)
    as_read = info["verification"]["parity"]["as_runtime_reads"]
    assert [p["runtime_export_float"] for p in info["predictions"]] == as_read
    verify = run("lora.scripts.verify_run", str(out), "--relaxed")
    assert verify.returncode == 0 and "15 passed, 0 failed" in verify.stdout, verify.stdout[-3000:]
    assert "WARN  model weights learned, not random: Moonshine v2 (streaming): RANDOM WEIGHTS" in verify.stdout
    assert "PASS  runtime export: moonshine-voice reloads it, same transcripts" in verify.stdout
    report = run("lora.scripts.report", str(out), "--output", str(tmp_path / "report.md"))
    assert report.returncode == 0, report.stderr[-2000:]
    text = (tmp_path / "report.md").read_text()
    assert text.splitlines()[2].startswith("**RANDOM WEIGHTS (test-4-layers, seed 0): mechanics only")
    assert "## On the device runtime (moonshine-voice" in text
    imported = run("lora.scripts.import_model", "--random-init", "streaming-tiny", "--output", str(tmp_path / "t"))
    assert imported.returncode == 0, imported.stderr[-2000:]
    mark = json.loads((tmp_path / "t" / "random_init.json").read_text())
    assert mark["shape"] == "streaming-tiny" and mark["weights"] == "random weights: mechanics only, no quality claim"
