"""Read the weights out of an ONNX-Runtime (.ort) model with onnxruntime's own flatbuffer reader.

Two things are returned for a graph (and its If-subgraphs):

* ``tensors``: every initializer as a numpy array; int8 weights are dequantized exactly the
  way the graph itself does it (its ``Cast -> Mul(scale) -> Add(zero_point)`` chain, in
  float32), so the float weight we get is bit-for-bit the one ONNX Runtime multiplies with;
* ``uses``: for each node name, ``{input_index: tensor_name}`` of the weights it consumes,
  so the caller can map ``/layers.0/self_attn/q_proj/MatMul`` to a transformers parameter.

Hand-rolled on purpose: ``onnx`` cannot open .ort files, and onnxruntime's Python API does
not expose initializers; its bundled flatbuffer schema (``ort_flatbuffers_py``) is the only
reader, so this module is a thin walk over it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lora.errors import ModelError

# ONNX TensorProto data types we meet in Moonshine's .ort files.
_NP_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 10: np.float16, 9: np.bool_}
_DEQUANT_OPS = ("Cast", "Mul", "Add")


@dataclass
class OrtWeights:
    path: Path
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    uses: dict[str, dict[int, str]] = field(default_factory=dict)

    def weight(self, node: str, index: int) -> np.ndarray:
        """The tensor consumed by ``node`` at input ``index``; a ModelError if there is none."""
        try:
            return self.tensors[self.uses[node][index]]
        except KeyError:
            raise ModelError(f"{self.path}: no weight at input {index} of node '{node}'") from None


def _fbs():
    try:
        import onnxruntime.tools.ort_format_model  # noqa: F401  (puts the schema on sys.path)
        from onnxruntime.tools.ort_format_model.ort_flatbuffers_py import fbs
    except ImportError as exc:  # pragma: no cover - onnxruntime is a hard dependency
        raise ModelError("onnxruntime is not installed: pip install onnxruntime") from exc
    return fbs


def _subgraphs(node, fbs):
    for a in range(node.AttributesLength()):
        attr = node.Attributes(a)
        if attr.Type() == fbs.AttributeType.AttributeType.GRAPH:
            yield attr.G()


def _walk(graph, fbs):
    """Yield (graph, node) for every node, recursing into If/Loop subgraphs."""
    for i in range(graph.NodesLength()):
        node = graph.Nodes(i)
        yield graph, node
        for sub in _subgraphs(node, fbs):
            yield from _walk(sub, fbs)


def _initializers(graph, fbs):
    for i in range(graph.InitializersLength()):
        yield graph.Initializers(i)
    for _, node in _walk(graph, fbs):
        for sub in _subgraphs(node, fbs):
            for i in range(sub.InitializersLength()):
                yield sub.Initializers(i)


def _to_numpy(t, path: Path) -> np.ndarray:
    dtype = _NP_DTYPES.get(t.DataType())
    name = t.Name().decode()
    if dtype is None:
        raise ModelError(f"{path}: initializer '{name}' has unsupported data type {t.DataType()}")
    dims = [t.Dims(j) for j in range(t.DimsLength())]
    raw = t.RawDataAsNumpy()
    if isinstance(raw, int) or raw is None:  # flatbuffers returns 0 for an absent vector
        raise ModelError(f"{path}: initializer '{name}' has no raw data (external data is not supported)")
    arr = np.frombuffer(raw.tobytes(), dtype=dtype)
    if arr.size != int(np.prod(dims)):
        raise ModelError(f"{path}: initializer '{name}' holds {arr.size} values, its shape {dims} needs more")
    return arr.reshape(dims)


def read_ort(path: str | Path) -> OrtWeights:
    """Parse ``path`` and return its weights, dequantized, with the node->weight index."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    fbs = _fbs()
    buf = path.read_bytes()
    try:
        if not fbs.InferenceSession.InferenceSession.InferenceSessionBufferHasIdentifier(buf, 0):
            raise ModelError(f"{path} is not an ONNX-Runtime .ort file (bad file identifier); reinstall the wheel")
        graph = fbs.InferenceSession.InferenceSession.GetRootAsInferenceSession(buf, 0).Model().Graph()
        values = {t.Name().decode(): _to_numpy(t, path) for t in _initializers(graph, fbs)}
        nodes = [(n.Name().decode(), n.OpType().decode(), [n.Inputs(j).decode() for j in range(n.InputsLength())],
                  [n.Outputs(j).decode() for j in range(n.OutputsLength())]) for _, n in _walk(graph, fbs)]
    except ModelError:
        raise
    except Exception as exc:  # flatbuffers raises anything on a truncated or corrupted buffer
        raise ModelError(f"{path} is corrupted or truncated ({type(exc).__name__}); reinstall the wheel") from exc

    out = OrtWeights(path=path)
    produced: set[str] = set()  # tensors computed by dequant nodes (not consumers of weights)
    by_output = {outs[0]: (op, ins) for _, op, ins, outs in nodes if outs}
    # Dequant chains (Cast -> Mul -> Add) only touch initializers, so a fixed point resolves them.
    changed = True
    while changed:
        changed = False
        for tensor, (op, ins) in by_output.items():
            if tensor in values or op not in _DEQUANT_OPS or not all(i in values for i in ins):
                continue
            if op == "Cast":
                values[tensor] = values[ins[0]].astype(np.float32)
            elif op == "Mul":
                values[tensor] = (values[ins[0]] * values[ins[1]]).astype(np.float32)
            else:
                values[tensor] = (values[ins[0]] + values[ins[1]]).astype(np.float32)
            produced.add(tensor)
            changed = True
    out.tensors = values
    for name, _op, ins, outs in nodes:
        if outs and outs[0] in produced:  # a dequant step, not a consumer
            continue
        used = {j: t for j, t in enumerate(ins) if t in values}
        if used:
            out.uses.setdefault(name, {}).update(used)
    return out
