"""What goes into the runtime folder besides the float graphs: int8 weights, ``.ort`` files, ``tokenizer.bin``.

* int8: ``onnxruntime.quantization.quantize_dynamic`` (int8 weights per output channel, activations
  quantized on the fly) on ``MatMul`` and ``Gather`` (the token embedding; the tied output
  projection reads the same int8 table through a ``Transpose``). Each decoder step graph is
  quantized before the merge: the quantizer does not reach into ``If`` branches. Per channel, since per-tensor
  scales cost more WER in moonshine-cpp (docs/export.md, "Measured"). The encoder's convolutions cannot go that
  way: onnxruntime's CPU kernels have no int8-weight ``ConvInteger`` (moonshine-cpp aborts loading one). Their weights
  are stored int8 per output channel behind a ``DequantizeLinear`` (:func:`int8_conv_weights`,
  hand-written: the quantizer has no weight-only mode for ``Conv``) and the convolution runs in
  float; that saves 10 of the encoder's 31 MB.
* ``.ort``: onnxruntime's own serializer (``session.save_model_format=ORT``, what its
  ``convert_onnx_models_to_ort`` tool calls) with graph optimizations off: any optimization level
  constant-folds the int8 output projection back to float (decoder 43 MB -> 70 MB), and higher
  levels bake in kernels for the exporting machine's CPU.
* ``tokenizer.bin``: the runtime's tokenizer format (``core/bin-tokenizer``: per token a 1-2 byte
  length, then its bytes; byte-fallback tokens ``<0xNN>`` as the raw byte), written from the
  processor's tokenizer. For Moonshine's tokenizer it is byte-identical to the shipped file.
"""

from __future__ import annotations

import re
from pathlib import Path

from lora.errors import ModelError

# moonshine-cpp knows two architectures (moonshine-model.cpp): layers, key/value heads, head dim.
RUNTIME_ARCHITECTURES = {"tiny": (6, 8, 36), "base": (8, 8, 52)}
QUANTIZED_OPS = ["MatMul", "Gather", "Transpose"]


def runtime_architecture(config) -> str:
    from lora.export.graphs import Shapes

    s = Shapes.of(config)
    for name, arch in RUNTIME_ARCHITECTURES.items():
        if (s.layers, s.heads, s.head_dim) == arch:
            return name
    known = "; ".join(f"{n}: {a[0]} decoder layers, {a[1]} heads of {a[2]}" for n, a in RUNTIME_ARCHITECTURES.items())
    raise ModelError(f"moonshine-cpp has no architecture for this model ({s.layers} decoder layers, {s.heads} heads of "
                     f"{s.head_dim}); it knows {known}")


def quantize_int8(src: Path, dst: Path) -> Path:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    # the quantizer's "consider pre-processing" advice goes to the root logger
    logging.getLogger().setLevel(logging.ERROR)
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=QUANTIZED_OPS,
                     per_channel=True)
    return dst


def int8_conv_weights(path: Path) -> Path:
    """Rewrite ``path`` in place: every float ``Conv`` weight becomes int8 (symmetric, per output channel) +
    DequantizeLinear."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    new_nodes = []
    for node in graph.node:
        w = inits.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if w is None or w.data_type != onnx.TensorProto.FLOAT:
            continue
        weight = numpy_helper.to_array(w)
        scale = np.abs(weight).reshape(weight.shape[0], -1).max(axis=1) / 127.0
        scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
        q = np.clip(np.round(weight / scale.reshape(-1, *[1] * (weight.ndim - 1))), -127, 127).astype(np.int8)
        graph.initializer.remove(w)
        graph.initializer.extend([numpy_helper.from_array(q, f"{w.name}_int8"),
                                  numpy_helper.from_array(scale, f"{w.name}_scale")])
        new_nodes.append(helper.make_node("DequantizeLinear", [f"{w.name}_int8", f"{w.name}_scale"], [w.name],
                                          name=f"{w.name}_DequantizeLinear", axis=0))
    nodes = new_nodes + list(graph.node)  # the weights are needed before any Conv runs
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(path))
    return path


def to_ort(src: Path, dst: Path) -> Path:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.optimized_model_filepath = str(dst)
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    return dst


_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def tokenizer_bin(tokenizer, size: int | None = None) -> bytes:
    """The runtime's ``tokenizer.bin`` for ``tokenizer``: ids 0 .. ``size``-1 in order (default its ``vocab_size``,
    the 32,000 pieces without the added special tokens, as moonshine-cpp's shipped base-en file holds them)."""
    out = bytearray()
    for token in tokenizer.convert_ids_to_tokens(list(range(size or tokenizer.vocab_size))):
        m = _BYTE_TOKEN.fullmatch(token or "")
        data = bytes([int(m.group(1), 16)]) if m else (token or "").encode("utf-8")
        n = len(data)
        if n >= 128 * 256:
            raise ModelError(f"token {token[:20]!r} is too long for the runtime's tokenizer.bin ({n} bytes)")
        out += bytes([n]) if n < 128 else bytes([128 + n % 128, n // 128])
        out += data
    return bytes(out)
