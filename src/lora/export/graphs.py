"""The three graphs Moonshine's runtimes load, each described once and exported with ``torch.onnx.export``.

Like optimum's ``OnnxConfig``: a :class:`GraphSpec` names a graph's inputs and outputs and the
symbolic name of every dynamic axis. The names are the ones in the ``base-en`` files shipped in
the ``moonshine-cpp`` wheel (read with onnxruntime's ``get_inputs()`` / ``get_outputs()``), so
a runtime that loads those loads ours.

* ``encoder_model.onnx``: raw 16 kHz audio -> ``last_hidden_state``.
* ``decoder_model_merged.onnx``: one graph for every decoding step. It is two exported graphs,
  the first step (no cache: computes self- and cross-attention keys/values) and the following
  steps (reads them from ``past_key_values``), joined under an ``If`` on ``use_cache_branch`` by
  :mod:`lora.export.merge`, exactly as the shipped file is built.

The decoder wrappers call transformers' own Moonshine decoder with an ``EncoderDecoderCache``
built from (and read back into) plain tensors, so the exported math is the model's, not ours.
Attention is exported with the eager kernel: SDPA's ``is_causal`` flag depends on the sequence
length, which is symbolic during export.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

OPSET = 18  # onnxruntime >= 1.14; moonshine-cpp ships onnxruntime 1.22
# The shipped encoder's name for its output length (conv strides 64, 3, 2); kept for an identical contract.
ENCODER_FRAMES = "floor(floor(floor(num_samples/64 - 127/64)/3)/2) - 1"


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph: file name, and for each input/output its dims (int = fixed, str = symbolic)."""

    file: str
    inputs: dict[str, tuple]
    outputs: dict[str, tuple]


@dataclass(frozen=True)
class Shapes:
    layers: int
    heads: int
    head_dim: int
    hidden: int
    vocab: int

    @classmethod
    def of(cls, config) -> Shapes:
        heads = config.decoder_num_key_value_heads
        return cls(config.decoder_num_hidden_layers, heads, config.hidden_size // config.decoder_num_attention_heads,
                   config.hidden_size, config.vocab_size)

    def cache_names(self, prefix: str) -> list[str]:
        """``{prefix}.{i}.decoder.key`` ... in the runtime's order: per layer decoder key/value, encoder key/value."""
        return [f"{prefix}.{i}.{part}.{kv}" for i in range(self.layers) for part in ("decoder", "encoder")
                for kv in ("key", "value")]


def encoder_spec(s: Shapes) -> GraphSpec:
    return GraphSpec("encoder_model.onnx", {"input_values": ("batch_size", "num_samples")},
                     {"last_hidden_state": ("batch_size", ENCODER_FRAMES, s.hidden)})


def decoder_spec(s: Shapes) -> GraphSpec:
    def cache(name: str, past: str) -> tuple:
        return ("batch_size", s.heads, "encoder_sequence_length_out" if ".encoder." in name else past, s.head_dim)

    inputs = {"input_ids": ("batch_size", "decoder_sequence_length"),
              "encoder_hidden_states": ("batch_size", "encoder_sequence_length", s.hidden)}
    inputs |= {n: cache(n, "past_decoder_sequence_length") for n in s.cache_names("past_key_values")}
    inputs["use_cache_branch"] = (1,)
    outputs = {"logits": ("batch_size", "decoder_sequence_length", s.vocab)}
    outputs |= {n: cache(n, "past_decoder_sequence_length + 1") for n in s.cache_names("present")}
    return GraphSpec("decoder_model_merged.onnx", inputs, outputs)


class EncoderGraph(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.encoder = model.model.encoder

    def forward(self, input_values):
        return self.encoder(input_values).last_hidden_state


class _DecoderGraph(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.decoder, self.head = model.model.decoder, model.proj_out
        self.layers = model.config.decoder_num_hidden_layers

    def step(self, input_ids, encoder_hidden_states, cache):
        out = self.decoder(input_ids=input_ids, encoder_hidden_states=encoder_hidden_states, cache=cache,
                           use_cache=True)
        return self.head(out.last_hidden_state)


class FirstStepGraph(_DecoderGraph):
    """No cache: logits and every layer's self- and cross-attention keys/values."""

    def forward(self, input_ids, encoder_hidden_states):
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        outputs = [self.step(input_ids, encoder_hidden_states, cache)]
        for i in range(self.layers):
            own, cross = cache.self_attention_cache.layers[i], cache.cross_attention_cache.layers[i]
            outputs += [own.keys, own.values, cross.keys, cross.values]
        return tuple(outputs)


class NextStepGraph(_DecoderGraph):
    """With cache: cross-attention reads the cached encoder keys/values; the self-attention cache grows by one."""

    def forward(self, input_ids, encoder_hidden_states, *past):
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        own, cross = DynamicCache(), DynamicCache()
        for i in range(self.layers):
            own.update(past[4 * i], past[4 * i + 1], i)
            cross.update(past[4 * i + 2], past[4 * i + 3], i)
        cache = EncoderDecoderCache(own, cross)
        cache.is_updated = dict.fromkeys(range(self.layers), True)  # cross-attention: use the cache, do not recompute
        outputs = [self.step(input_ids, encoder_hidden_states, cache)]
        for i in range(self.layers):
            layer = cache.self_attention_cache.layers[i]
            outputs += [layer.keys, layer.values, past[4 * i + 2], past[4 * i + 3]]
        return tuple(outputs)


def _export(module, args: tuple, path: Path, input_names: list[str], output_names: list[str], dynamic_shapes) -> Path:
    import contextlib
    import io
    import logging
    import warnings

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=input_names, output_names=output_names,
                          dynamic_shapes=dynamic_shapes, opset_version=OPSET, dynamo=True, external_data=False,
                          verbose=False)
    return path


def export_encoder(model, folder: Path) -> Path:
    from torch.export import Dim

    s = Shapes.of(model.config)
    batch, samples = Dim("batch_size"), Dim("num_samples", min=1024)
    audio = torch.randn(2, 16000) * 0.1
    return _export(EncoderGraph(model).eval(), (audio,), folder / encoder_spec(s).file, ["input_values"],
                   ["last_hidden_state"], {"input_values": {0: batch, 1: samples}})


def export_decoder_steps(model, folder: Path) -> tuple[Path, Path]:
    """The first-step and next-step graphs (merged into one file by :func:`lora.export.merge.merge_decoders`)."""
    from torch.export import Dim

    s = Shapes.of(model.config)
    batch, enc, dec, past = (Dim("batch_size"), Dim("encoder_sequence_length"), Dim("decoder_sequence_length"),
                             Dim("past_decoder_sequence_length"))
    hidden = torch.randn(2, 40, s.hidden)  # sizes > 1 everywhere, so no axis is specialised to a constant
    ids = torch.tensor([[1, 5, 7], [1, 9, 4]])
    first = _export(FirstStepGraph(model).eval(), (ids, hidden), folder / "decoder_first_step.onnx",
                    ["input_ids", "encoder_hidden_states"], ["logits", *s.cache_names("present")],
                    {"input_ids": {0: batch, 1: dec}, "encoder_hidden_states": {0: batch, 1: enc}})
    with torch.no_grad():
        cache = list(FirstStepGraph(model).eval()(ids, hidden)[1:])
    axes = tuple({0: batch, 2: enc} if i % 4 >= 2 else {0: batch, 2: past} for i in range(4 * s.layers))
    nxt = _export(NextStepGraph(model).eval(), (ids[:, :1], hidden, *cache), folder / "decoder_next_step.onnx",
                  ["input_ids", "encoder_hidden_states", *s.cache_names("past_key_values")],
                  ["logits", *s.cache_names("present")],
                  {"input_ids": {0: batch}, "encoder_hidden_states": {0: batch, 1: enc}, "past": axes})
    return first, nxt


def apply_spec(model_proto, spec: GraphSpec):
    """Give the graph's inputs and outputs exactly the spec's names, order and dims; fail on any other input."""
    import onnx

    graph = model_proto.graph
    have = {v.name: v for v in graph.input}
    extra = set(have) - set(spec.inputs)
    if extra:
        raise ValueError(f"{spec.file}: unexpected inputs {sorted(extra)}")
    for values, wanted in ((graph.input, spec.inputs), (graph.output, spec.outputs)):
        by_name = {v.name: v for v in values}
        missing = [n for n in wanted if n not in by_name]
        if missing:
            raise ValueError(f"{spec.file}: missing {missing[:3]}")
        ordered = []
        for name, dims in wanted.items():
            v = onnx.ValueInfoProto()
            v.CopyFrom(by_name[name])
            shape = v.type.tensor_type.shape
            del shape.dim[:]
            for d in dims:
                dim = shape.dim.add()
                if isinstance(d, int):
                    dim.dim_value = d
                else:
                    dim.dim_param = d
            ordered.append(v)
        del values[:]
        values.extend(ordered)
    return model_proto
