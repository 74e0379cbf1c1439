"""Turn the Moonshine base-en model shipped on PyPI into a normal transformers checkpoint.

Source: the ``moonshine-cpp`` wheel (MIT) ships ``models/base-en/{encoder_model,
decoder_model_merged}.ort`` with int8 weights; ``useful-moonshine-onnx`` (MIT) ships the
Moonshine ``tokenizer.json``. The weights are read with :mod:`lora.model.ort_weights`, matched to
transformers parameter names by the graph's node names, and written as ``model.safetensors``
beside config, processor and generation config. Nothing is downloaded.

Every transformers parameter must be matched and have the right shape, or the import fails.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lora.errors import ModelError
from lora.model.ort_weights import OrtWeights, read_ort

SOURCES = ("moonshine-cpp",)
WHEELS = {"moonshine-cpp": "moonshine_cpp", "useful-moonshine-onnx": "moonshine_onnx"}
INSTALL_HINT = "pip install 'moonshine-lora[offline]' (or: pip install moonshine-cpp useful-moonshine-onnx)"

# Moonshine base: 8+8 layers, width 416, 8 heads of 52 dims, 32 of them rotary (0.62 * 52 -> 32).
BASE_EN_CONFIG = dict(
    vocab_size=32768,
    hidden_size=416,
    intermediate_size=1664,
    encoder_num_hidden_layers=8,
    decoder_num_hidden_layers=8,
    encoder_num_attention_heads=8,
    decoder_num_attention_heads=8,
    encoder_num_key_value_heads=8,
    decoder_num_key_value_heads=8,
    encoder_hidden_act="gelu",
    decoder_hidden_act="silu",
    max_position_embeddings=512,
    partial_rotary_factor=0.62,
    rope_theta=10000.0,
    tie_word_embeddings=True,
    pad_token_id=0,
    bos_token_id=1,
    decoder_start_token_id=1,
    eos_token_id=2,
)


@dataclass
class WheelFiles:
    encoder: Path
    decoder: Path
    tokenizer: Path
    versions: dict[str, str]


def _package_dir(module: str, dist: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the '{dist}' wheel is not installed; {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def find_wheel_files(source: str = "moonshine-cpp") -> WheelFiles:
    if source not in SOURCES:
        raise ModelError(f"unknown --source '{source}'; valid sources: {', '.join(SOURCES)}")
    cpp = _package_dir("moonshine_cpp", "moonshine-cpp") / "models" / "base-en"
    tok = _package_dir("moonshine_onnx", "useful-moonshine-onnx") / "assets" / "tokenizer.json"
    files = WheelFiles(cpp / "encoder_model.ort", cpp / "decoder_model_merged.ort", tok, {})
    for f in (files.encoder, files.decoder, files.tokenizer):
        if not f.is_file():
            raise ModelError(f"missing file {f}; reinstall with {INSTALL_HINT}")
    files.versions = {d: importlib.metadata.version(d) for d in WHEELS}
    return files


def shipped_base_en_dir() -> Path:
    """moonshine-cpp's own base-en folder (int8 .ort + tokenizer.bin), as its runtime loads it."""
    folder = _package_dir("moonshine_cpp", "moonshine-cpp") / "models" / "base-en"
    if not (folder / "encoder_model.ort").is_file():
        raise ModelError(f"missing {folder / 'encoder_model.ort'}; reinstall with {INSTALL_HINT}")
    return folder


# What the shipped recordings say (beckett.wav: Samuel Beckett, "Worstward Ho").
RECORDED_REFERENCES = {"beckett.wav": "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."}


def recorded_audio() -> list[Path]:
    """Real human recordings shipped by the wheels (beckett.wav); empty if not installed."""
    out = []
    for module, rel in (("moonshine_cpp", "test-data/beckett.wav"),):
        spec = importlib.util.find_spec(module)
        if spec and spec.submodule_search_locations:
            p = Path(next(iter(spec.submodule_search_locations))) / rel
            if p.is_file():
                out.append(p)
    return out


def base_en_config():
    from transformers import MoonshineConfig

    return MoonshineConfig(**BASE_EN_CONFIG)


# transformers name (layer index replaced by N)  ->  (graph, node template, input index, transpose)
_ATTN = r"(self_attn|encoder_attn)"
_RULES: list[tuple[str, str, str, int, bool]] = [
    (r"model\.encoder\.conv(\d)\.weight", "enc", "/conv{0}/Conv", 1, False),
    (r"model\.encoder\.conv(\d)\.bias", "enc", "/conv{0}/Conv", 2, False),
    (r"model\.encoder\.groupnorm\.weight", "enc", "/groupnorm/Mul", 1, False),
    (r"model\.encoder\.groupnorm\.bias", "enc", "/groupnorm/Add", 1, False),
    (r"model\.encoder\.layer_norm\.weight", "enc", "/layer_norm/Mul", 1, False),
    (r"model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.weight", "enc",
     "/layers.{0}/self_attn/{1}_proj/MatMul", 1, True),
    (r"model\.encoder\.layers\.(\d+)\.self_attn\.o_proj\.weight", "enc", "/layers.{0}/self_attn/dense/MatMul", 1, True),
    (r"model\.encoder\.layers\.(\d+)\.mlp\.(fc[12])\.weight", "enc", "/layers.{0}/mlp/{1}/MatMul", 1, True),
    (r"model\.encoder\.layers\.(\d+)\.mlp\.(fc[12])\.bias", "enc", "/layers.{0}/mlp/{1}/Add", 0, False),
    (r"model\.encoder\.layers\.(\d+)\.(\w+_layernorm)\.weight", "enc", "/layers.{0}/{1}/Mul", 1, False),
    (r"model\.decoder\.embed_tokens\.weight", "dec", "/model/decoder/embed_tokens/Gather", 0, False),
    (r"proj_out\.weight", "dec", "/model/decoder/embed_tokens/Gather", 0, False),  # tied head
    (r"model\.decoder\.norm\.weight", "dec", "/model/decoder/norm/Mul", 1, False),
    (rf"model\.decoder\.layers\.(\d+)\.{_ATTN}\.([qkv])_proj\.weight", "dec",
     "/model/decoder/layers.{0}/{1}/{2}_proj/MatMul", 1, True),
    (rf"model\.decoder\.layers\.(\d+)\.{_ATTN}\.o_proj\.weight", "dec",
     "/model/decoder/layers.{0}/{1}/dense/MatMul", 1, True),
    (r"model\.decoder\.layers\.(\d+)\.mlp\.fc1\.weight", "dec",
     "/model/decoder/layers.{0}/mlp/up_proj/MatMul", 1, True),
    (r"model\.decoder\.layers\.(\d+)\.mlp\.fc2\.weight", "dec",
     "/model/decoder/layers.{0}/mlp/down_proj/MatMul", 1, True),
    (r"model\.decoder\.layers\.(\d+)\.mlp\.fc1\.bias", "dec", "/model/decoder/layers.{0}/mlp/up_proj/Add", 0, False),
    (r"model\.decoder\.layers\.(\d+)\.mlp\.fc2\.bias", "dec", "/model/decoder/layers.{0}/mlp/down_proj/Add", 0, False),
    (r"model\.decoder\.layers\.(\d+)\.(\w+_layernorm)\.weight", "dec", "/model/decoder/layers.{0}/{1}/Mul", 1, False),
]


def map_weights(expected: dict[str, tuple[int, ...]], graphs: dict[str, OrtWeights]) -> dict[str, np.ndarray]:
    """Return ``{transformers name: array}`` for every name in ``expected``, checking shapes."""
    out: dict[str, np.ndarray] = {}
    unmapped = []
    for name, shape in expected.items():
        for pattern, graph, node, index, transpose in _RULES:
            m = re.fullmatch(pattern, name)
            if m:
                arr = graphs[graph].weight(node.format(*m.groups()), index)
                arr = arr.T if transpose else arr
                arr = arr.reshape(shape) if arr.size == int(np.prod(shape)) and arr.ndim != len(shape) else arr
                if tuple(arr.shape) != tuple(shape):
                    raise ModelError(f"shape mismatch for {name}: transformers wants {tuple(shape)}, "
                                     f"{graphs[graph].path.name} node {node.format(*m.groups())} has {arr.shape}")
                out[name] = np.ascontiguousarray(arr, dtype=np.float32)
                break
        else:
            unmapped.append(name)
    if unmapped:
        raise ModelError(f"{len(unmapped)} transformers parameters have no ORT weight: {', '.join(unmapped[:5])}")
    return out


def check_rotary(config, graphs: dict[str, OrtWeights]) -> None:
    """The graph's rotary inverse frequencies must equal the ones transformers derives from config."""
    from transformers.models.moonshine.modeling_moonshine import MoonshineRotaryEmbedding

    ours = MoonshineRotaryEmbedding(config).inv_freq.numpy()
    for graph, node in (("enc", "/rotary_emb/MatMul"), ("dec", "/model/decoder/rotary_emb/MatMul")):
        theirs = graphs[graph].weight(node, 0).reshape(-1)
        if theirs.shape != ours.shape or not np.allclose(theirs, ours, rtol=1e-6):
            raise ModelError(f"rotary embedding of {graphs[graph].path.name} does not match the config "
                             f"({theirs.shape[0]} vs {ours.shape[0]} frequencies)")


def build_processor(tokenizer_json: Path):
    from transformers import PreTrainedTokenizerFast, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                  do_normalize=False, return_attention_mask=True)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json), bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>", pad_token="<unk>",
                                  model_input_names=["input_ids", "attention_mask"])
    return Wav2Vec2Processor(feature_extractor=fe, tokenizer=tok)


def import_model(output: str | Path, source: str = "moonshine-cpp", force: bool = False) -> Path:
    """Write a transformers checkpoint directory for the offline model; returns its path."""
    import torch
    from transformers import GenerationConfig, MoonshineForConditionalGeneration

    from lora.storage.atomic import atomic_dir, file_sha256

    output = Path(output)
    files = find_wheel_files(source)
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not force:
        raise ModelError(f"output directory {output} exists and is not empty; pass --force to replace it")
    graphs = {"enc": read_ort(files.encoder), "dec": read_ort(files.decoder)}
    config = base_en_config()
    check_rotary(config, graphs)
    with torch.device("meta"):
        skeleton = MoonshineForConditionalGeneration(config)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    weights = map_weights(expected, graphs)
    model = MoonshineForConditionalGeneration(config)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()}, strict=True)
    model.generation_config = GenerationConfig(decoder_start_token_id=1, bos_token_id=1, eos_token_id=2,
                                               pad_token_id=0)
    model.eval()
    processor = build_processor(files.tokenizer)
    with atomic_dir(output, force=True) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        info = {
            "source": source,
            "model": "Moonshine base-en (int8 ONNX-Runtime weights, dequantized to float32)",
            "license": "MIT (moonshine-cpp, useful-moonshine-onnx)",
            "wheels": files.versions,
            "files": {f.name: file_sha256(f) for f in (files.encoder, files.decoder, files.tokenizer)},
            "parameters": len(weights),
        }
        (tmp / "import_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return output


def is_imported_dir(path: str | Path) -> bool:
    return (Path(path) / "import_info.json").is_file()
