"""Join the first-step and next-step decoder graphs into ``decoder_model_merged.onnx``.

The result has one ``If`` node on ``use_cache_branch``: ``else`` runs the first-step graph
(computes the caches), ``then`` the next-step graph (reads them). Weights used by both graphs
are stored once, in the outer graph, where both branches can read them.

Hand-written on purpose, after optimum's ``merge_decoders`` (``optimum/onnx/graph_transformations.py``),
which is how the shipped Moonshine files were made: ``optimum-onnx`` itself pins
``transformers<4.58`` and cannot be installed beside transformers 5. Differences: weights are
matched by content hash (the two exports name their constants differently), and every name
inside a branch gets the branch's prefix, so no two scopes ever define the same name.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# optimum keeps these small constants inside the branches: onnxruntime mishandles them otherwise.
_INT_TYPES = (6, 7)  # TensorProto.INT32, INT64


def _stays_in_branch(init) -> bool:
    return len(init.dims) == 0 or (len(init.dims) == 1 and init.data_type in _INT_TYPES)


class _SharedWeights:
    """Initializers moved to the outer graph, one per distinct content."""

    def __init__(self):
        self.tensors: list = []
        self._by_content: dict[tuple, str] = {}
        self._names: set[str] = set()

    def add(self, init) -> str:
        import onnx

        body = onnx.TensorProto()
        body.CopyFrom(init)
        body.name = ""
        key = (hashlib.sha256(body.SerializeToString()).hexdigest(), tuple(init.dims), init.data_type)
        if key not in self._by_content:
            name = init.name if init.name not in self._names else f"{init.name}.{len(self._names)}"
            body.name = name
            self._names.add(name)
            self._by_content[key] = name
            self.tensors.append(body)
        return self._by_content[key]


def _branch(model, prefix: str, shared: _SharedWeights):
    """The model's graph as an If branch: no inputs (it reads the outer scope), prefixed internal names."""
    from onnx import helper

    g = model.graph
    outer_inputs = {v.name for v in g.input}
    rename: dict[str, str] = {}
    local = []
    for init in g.initializer:
        if _stays_in_branch(init):
            rename[init.name] = prefix + init.name
            init.name = rename[init.name]
            local.append(init)
        else:
            rename[init.name] = shared.add(init)
    for node in g.node:
        for out in node.output:
            if out:
                rename.setdefault(out, prefix + out)

    def fix(names):
        return [n if n in outer_inputs else rename.get(n, n) for n in names]

    for node in g.node:
        node.name = prefix + node.name
        node.input[:] = fix(node.input)
        node.output[:] = fix(node.output)
        for attr in node.attribute:
            if attr.HasField("g"):
                raise ValueError(f"{prefix}: nested subgraphs are not supported ({node.op_type})")
    outputs = []
    for v in g.output:
        out = type(v)()
        out.CopyFrom(v)
        out.name = rename.get(v.name, v.name)
        outputs.append(out)
    return helper.make_graph(list(g.node), prefix.rstrip("/"), [], outputs, local)


def merge_decoders(first_step: str | Path, next_step: str | Path):
    """An ``onnx.ModelProto`` whose outputs are the first-step graph's, chosen by ``use_cache_branch``."""
    import onnx
    from onnx import helper

    first, nxt = onnx.load(str(first_step)), onnx.load(str(next_step))
    if [o.name for o in first.graph.output] != [o.name for o in nxt.graph.output]:
        raise ValueError("the two decoder graphs must have the same outputs in the same order")
    if first.opset_import != nxt.opset_import:
        raise ValueError("the two decoder graphs must use the same opset")
    inputs, seen = [], set()
    for m in (first, nxt):
        for v in m.graph.input:
            if v.name not in seen:
                seen.add(v.name)
                inputs.append(v)
    outputs = list(first.graph.output)
    shared = _SharedWeights()
    if_node = helper.make_node("If", ["use_cache_branch"], [o.name for o in outputs], name="use_cache_branch/If",
                               then_branch=_branch(nxt, "with_past/", shared),
                               else_branch=_branch(first, "no_past/", shared))
    use_cache = helper.make_tensor_value_info("use_cache_branch", onnx.TensorProto.BOOL, [1])
    graph = helper.make_graph([if_node], "decoder_model_merged", inputs + [use_cache], outputs, shared.tensors)
    merged = helper.make_model(graph, opset_imports=list(first.opset_import), producer_name="moonshine-lora")
    merged.ir_version = first.ir_version
    return merged
