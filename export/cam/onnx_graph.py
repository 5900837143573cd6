"""Reading an ONNX graph without torch: who produces and who consumes each tensor, constant values (initializers,
``Constant`` nodes, and ``Identity`` of either), node attributes, and the graph's real tensor shapes (one
onnxruntime run with the tensors asked for exposed as outputs)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from export.common.onnx_run import ort_session

NCHW = "NCHW"
NHWC = "NHWC"


def node_label(node: onnx.NodeProto) -> str:
    """``OpType 'name'`` (the first output when the node has no name), as error messages show a node."""
    return f"{node.op_type} '{node.name or (node.output[0] if node.output else '?')}'"


def attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of attribute ``name`` (ints, floats, strings, lists, tensors as numpy), or ``default``."""
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            if isinstance(value, onnx.TensorProto):
                return numpy_helper.to_array(value)
            if isinstance(value, bytes):
                return value.decode()
            return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
    return default


@dataclass
class Graph:
    """Index of one model's main graph (built once; the model is not modified)."""

    model: onnx.ModelProto
    producer: dict[str, onnx.NodeProto] = field(default_factory=dict)
    consumers: dict[str, list[onnx.NodeProto]] = field(default_factory=dict)
    initializers: dict[str, onnx.TensorProto] = field(default_factory=dict)
    # The node objects, read once: protobuf hands out a new wrapper on each access to a repeated field, so
    # nodes are compared by their index here, never by ``id`` of a fresh ``graph.node[i]``.
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    position: dict[int, int] = field(default_factory=dict)  # id(node in self.nodes) -> its index

    def __post_init__(self) -> None:
        g = self.model.graph
        self.initializers = {t.name: t for t in g.initializer}
        self.nodes = list(g.node)
        for i, node in enumerate(self.nodes):
            self.position[id(node)] = i
            for out in node.output:
                if out:
                    self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers.setdefault(inp, []).append(node)

    @property
    def opset(self) -> int:
        return next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), 1)

    @property
    def outputs(self) -> list[str]:
        return [o.name for o in self.model.graph.output]

    @property
    def real_inputs(self) -> list[onnx.ValueInfoProto]:
        """The graph inputs that are not initializers (old exporters list the weights as inputs too)."""
        return [i for i in self.model.graph.input if i.name not in self.initializers]

    def names(self) -> set[str]:
        """Every tensor name used in the graph."""
        g = self.model.graph
        out = {i.name for i in g.input} | set(self.initializers) | {o.name for o in g.output}
        for node in self.nodes:
            out |= {n for n in (*node.input, *node.output) if n}
        return out

    def constant(self, name: str) -> np.ndarray | None:
        """The value of ``name`` when it is an initializer, a ``Constant`` node's output, or an ``Identity`` of one."""
        if name in self.initializers:
            return np.asarray(numpy_helper.to_array(self.initializers[name]))
        node = self.producer.get(name) if name else None
        if node is not None and node.op_type == "Identity":
            return self.constant(node.input[0])
        if node is None or node.op_type != "Constant":
            return None
        values = (attr(node, key) for key in ("value", "value_float", "value_floats", "value_int", "value_ints"))
        return next((np.asarray(v) for v in values if v is not None), None)

    def is_constant(self, name: str) -> bool:
        return self.constant(name) is not None

    def data_consumers(self, name: str) -> list[onnx.NodeProto]:
        """The consumers of ``name`` that use its values (a ``Shape`` or ``Size`` node only reads its shape)."""
        return [n for n in self.consumers.get(name, []) if n.op_type not in ("Shape", "Size")]

    def index(self, node: onnx.NodeProto) -> int:
        """The position of ``node`` (one of :attr:`nodes`) in the graph."""
        return self.position[id(node)]

    def ancestors_of_outputs(self) -> set[int]:
        """The index of every node that an output of the graph depends on."""
        seen: set[int] = set()
        stack = [self.producer[o] for o in self.outputs if o in self.producer]
        while stack:
            node = stack.pop()
            if self.index(node) in seen:
                continue
            seen.add(self.index(node))
            stack.extend(self.producer[i] for i in node.input if i in self.producer)
        return seen


def input_layout(shape: Sequence[int | None]) -> str:
    """``NHWC`` for a 4-D image input whose last axis is 3 (RGB) and second is not, else ``NCHW``."""
    if len(shape) == 4 and shape[3] == 3 and shape[1] != 3:
        return NHWC
    return NCHW


def static_dims(value: onnx.ValueInfoProto) -> list[int | None]:
    """The dims of a tensor value info, ``None`` where symbolic or unknown."""
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]


def with_outputs(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose outputs are its own plus ``names`` (intermediate tensors, types left to the runtime)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for name in names:
        if name not in have:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
            have.add(name)
    return probe


def run_model(
    model: onnx.ModelProto, feeds: Sequence[np.ndarray], outputs: Sequence[str]
) -> list[dict[str, np.ndarray]]:
    """Run ``model`` (onnxruntime, CPU) on each input array of ``feeds``: the named tensors (exposed as outputs
    first when they are intermediate), one dict per feed."""
    probe = with_outputs(model, outputs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save(probe, str(path))
        sess = ort_session(path)
        name = sess.get_inputs()[0].name
        results = []
        for feed in feeds:
            values = sess.run(list(outputs), {name: feed})
            results.append({n: np.asarray(v) for n, v in zip(outputs, values, strict=True)})
    return results
