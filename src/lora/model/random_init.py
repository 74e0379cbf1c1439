"""Moonshine v2 with random weights, for offline work: the real architecture, no learned weights.

No package our machines reach ships v2 weights (``moonshine-voice`` downloads them when it runs), so the v2 path is
proven offline on checkpoints built here: ``MoonshineStreamingForConditionalGeneration`` from a config of the
size named, seeded random weights, the tokenizer from the offline wheels, and :data:`MARK_FILE`, which every run,
summary, ``verify_run`` and report repeats as :data:`RANDOM_WEIGHTS`. Numbers measured on them are mechanics
(speed, memory, that the loop learns, that an export matches PyTorch), never quality.

The shapes: ``streaming-tiny`` is transformers' default ``MoonshineStreamingConfig`` (its docstring names
UsefulSensors/moonshine-streaming-tiny). For small and medium the model cards give layers and widths (small: 10
encoder and 10 decoder layers, encoder 620 wide, decoder 512; medium: 14 and 14, 768 and 640); the head counts and
MLP widths below are our assumption (heads 62-64 wide, MLPs 4x), so parameter counts differ from the cards' (see
docs/v2.md). A real checkpoint's config.json replaces all of this.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lora.errors import ModelError

MARK_FILE = "random_init.json"
RANDOM_WEIGHTS = "random weights: mechanics only, no quality claim"


@dataclass(frozen=True)
class Shape:
    encoder_hidden: int
    decoder_hidden: int
    layers: int  # encoder and decoder each
    encoder_heads: int
    decoder_heads: int
    encoder_ffn: int
    decoder_ffn: int


SHAPES = {
    "streaming-tiny": Shape(320, 320, 6, 8, 8, 1280, 1280),
    "streaming-small": Shape(620, 512, 10, 10, 8, 2480, 2048),
    "streaming-medium": Shape(768, 640, 14, 12, 10, 3072, 2560),
}


def streaming_config(shape: Shape):
    """A v2 config of ``shape``: windows (16, 4) in the first two and last two encoder layers, (16, 0) between (the
    layout of transformers' default, 80 ms of look-ahead), Moonshine's special tokens."""
    from transformers import MoonshineStreamingConfig

    windows = [[16, 4]] * 2 + [[16, 0]] * (shape.layers - 4) + [[16, 4]] * 2
    return MoonshineStreamingConfig(
        encoder_config=dict(hidden_size=shape.encoder_hidden, intermediate_size=shape.encoder_ffn,
                            num_hidden_layers=shape.layers, num_attention_heads=shape.encoder_heads,
                            num_key_value_heads=shape.encoder_heads, sliding_windows=windows),
        hidden_size=shape.decoder_hidden, intermediate_size=shape.decoder_ffn, num_hidden_layers=shape.layers,
        num_attention_heads=shape.decoder_heads, num_key_value_heads=shape.decoder_heads, vocab_size=32768,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)


def build_streaming_processor(tokenizer_json: Path):
    """v2's processor (raw audio padded to whole 80-sample frames) with the offline tokenizer."""
    from transformers import MoonshineStreamingProcessor

    from lora.model.offline import build_processor

    v1 = build_processor(tokenizer_json)
    return MoonshineStreamingProcessor(feature_extractor=v1.feature_extractor, tokenizer=v1.tokenizer)


def write_random_init(config, output: str | Path, name: str, seed: int = 0, force: bool = False) -> Path:
    """Write a v2 checkpoint of ``config`` with weights drawn from ``seed`` (same seed, same weights)."""
    import torch
    from transformers import GenerationConfig, MoonshineStreamingForConditionalGeneration

    from lora.model.offline import find_wheel_files
    from lora.storage.atomic import atomic_dir

    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not force:
        raise ModelError(f"output directory {output} exists and is not empty; pass --force to replace it")
    files = find_wheel_files()
    torch.manual_seed(seed)
    model = MoonshineStreamingForConditionalGeneration(config)
    model.generation_config = GenerationConfig(decoder_start_token_id=1, bos_token_id=1, eos_token_id=2,
                                               pad_token_id=0)
    with atomic_dir(output, force=True) as tmp:
        model.save_pretrained(tmp)
        build_streaming_processor(files.tokenizer).save_pretrained(tmp)
        mark = {"weights": RANDOM_WEIGHTS, "shape": name, "seed": seed,
                "parameters": sum(p.numel() for p in model.parameters()),
                "tokenizer": f"{files.tokenizer.name} from the offline wheels {files.versions}"}
        (tmp / MARK_FILE).write_text(json.dumps(mark, indent=2) + "\n")
    return output


def random_init(name: str, output: str | Path, seed: int = 0, force: bool = False) -> Path:
    if name not in SHAPES:
        raise ModelError(f"--random-init {name}: unknown shape; valid: {', '.join(SHAPES)}")
    return write_random_init(streaming_config(SHAPES[name]), output, name, seed, force)


def random_weights(model_path: str | Path) -> dict | None:
    """The mark of a checkpoint written here (None: weights that were learned, or a hub id)."""
    mark = Path(model_path) / MARK_FILE
    return json.loads(mark.read_text()) if mark.is_file() else None


def weights_line(mark: dict | None) -> str:
    """How a run's model weights are described wherever its numbers are shown."""
    if mark is None:
        return "learned weights (a hub checkpoint, a local one, or base-en imported from the offline wheels)"
    return f"RANDOM WEIGHTS ({mark.get('shape', '?')}, seed {mark.get('seed', '?')}): mechanics only, no quality claim"
