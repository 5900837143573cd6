"""Turn a located GAP -> linear tail into the service's CAM graph: the original graph, fed NCHW, with the outputs
``features`` (N, K, R, C), ``pooled`` (N, K), ``logits`` (N, classes), ``cam_weight`` (classes, K) and
``cam_bias`` (classes,) - the dense layer as constants, so the weights live in the one file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.cam.onnx_graph import NCHW, NHWC, Graph, attr
from export.cam.onnx_tail import Tail

CONTRACT = ("features", "pooled", "logits", "cam_weight", "cam_bias")


@dataclass
class CamGraph:
    """The rewritten model, its outputs (contract name -> graph name), its input's name, and what was changed."""

    model: onnx.ModelProto
    outputs: dict[str, str]
    input_name: str
    changes: list[str] = field(default_factory=list)


class _Names:
    """Fresh tensor names: the wanted one when the graph does not use it yet, else ``<name>_cam``, ``_cam2``..."""

    def __init__(self, used: set[str]) -> None:
        self.used = set(used)

    def fresh(self, want: str) -> str:
        name, i = want, 1
        while name in self.used:
            name = f"{want}_cam" + (str(i) if i > 1 else "")
            i += 1
        self.used.add(name)
        return name


def _prune(model: onnx.ModelProto) -> None:
    """Drop the nodes the outputs do not depend on (a final Softmax, the original's other outputs)."""
    graph = Graph(model)
    keep = graph.ancestors_of_outputs()
    nodes = [onnx.NodeProto() for i in sorted(keep)]
    for copy, i in zip(nodes, sorted(keep), strict=True):
        copy.CopyFrom(graph.nodes[i])
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    inits = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)


def _nchw_input(model: onnx.ModelProto, graph: Graph, names: _Names) -> tuple[str, str]:
    """Feed an NHWC graph NCHW: a new input ``image`` (N, 3, H, W) transposed to the original one."""
    old = graph.real_inputs[0]
    dims = list(old.type.tensor_type.shape.dim)
    new_dims: list[int | str | None] = []
    for d in (dims[0], dims[3], dims[1], dims[2]):
        new_dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    name = names.fresh("image")
    value = helper.make_tensor_value_info(name, old.type.tensor_type.elem_type, new_dims)
    inputs = [value if i.name == old.name else i for i in model.graph.input]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    to_nhwc = helper.make_node("Transpose", [name], [old.name], name="cam_input_to_nhwc", perm=[0, 2, 3, 1])
    model.graph.node.insert(0, to_nhwc)
    return name, f"input '{name}' (N, 3, H, W) added, transposed to the original NHWC input '{old.name}'"


def build_cam_graph(
    model: onnx.ModelProto,
    tail: Tail,
    input_layout: str,
    measured: Mapping[str, Sequence[int]] | None = None,
    classes: int | None = None,
) -> CamGraph:
    """A copy of ``model`` with the contract outputs (only them) and, for an NHWC input, an NCHW one.  ``measured``
    (tensor shapes): a tensor already named ``pooled`` / ``logits`` and 2-D is output as it is.  With no linear layer
    in ``tail`` (a split head, :mod:`export.cam.onnx_split`): ``features``, ``pooled`` and ``logits`` only, and
    ``classes`` gives the logits' width."""
    if tail.logits is None or (tail.linear is None and classes is None):
        raise ValueError(f"not a GAP -> linear tail: {tail.reason}")
    graph = Graph(model)
    names = _Names(graph.names())
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes: list[onnx.NodeProto] = []
    changes: list[str] = []

    features = tail.gap.features
    if tail.gap.layout == NHWC:
        src = graph.producer.get(features)
        if src is not None and src.op_type == "Transpose" and attr(src, "perm") == [0, 2, 3, 1]:
            features = src.input[0]  # the NCHW volume the graph transposed to NHWC before the GAP
            changes.append(f"features: '{features}', the NCHW volume before the NHWC GAP input '{tail.gap.features}'")
        else:
            nchw = names.fresh("features_nchw")
            nodes.append(
                helper.make_node("Transpose", [features], [nchw], name="cam_features_to_nchw", perm=[0, 3, 1, 2])
            )
            changes.append(f"features: NHWC GAP input '{features}' transposed to NCHW")
            features = nchw
    mapping: dict[str, str] = {}
    for contract, src_name, op in (
        ("features", features, "Identity"),
        ("pooled", tail.gap.pooled, "Flatten"),
        ("logits", tail.logits, "Flatten"),
    ):
        if src_name == contract and (op == "Identity" or len((measured or {}).get(src_name, ())) == 2):
            mapping[contract] = contract  # already there under its contract name (a torch export's "logits")
            continue
        target = names.fresh(contract)
        if op == "Flatten":  # (N, K, 1, 1), (N, 1, 1, K), (N, K) -> (N, K): the other axes are 1
            nodes.append(helper.make_node(op, [src_name], [target], name=f"cam_{contract}", axis=1))
        else:
            nodes.append(helper.make_node(op, [src_name], [target], name=f"cam_{contract}"))
        mapping[contract] = target
    dense = () if tail.linear is None else (("cam_weight", tail.linear.weight), ("cam_bias", tail.linear.bias))
    for contract, value in dense:
        target = names.fresh(contract)
        tensor = numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name=f"{target}_value")
        nodes.append(helper.make_node("Constant", [], [target], name=f"cam_{contract}", value=tensor))
        mapping[contract] = target
    out.graph.node.extend(nodes)

    del out.graph.output[:]
    if tail.linear is not None:
        classes = int(tail.linear.weight.shape[0])
    channels = tail.gap.channels
    shapes: dict[str, list[int | None]] = {
        "features": [None, channels, None, None],
        "pooled": [None, channels],
        "logits": [None, classes],
        "cam_weight": [classes, channels],
        "cam_bias": [classes],
    }
    for contract in CONTRACT[: 5 if tail.linear is not None else 3]:
        shape = shapes[contract]
        out.graph.output.append(helper.make_tensor_value_info(mapping[contract], TensorProto.FLOAT, shape))

    input_name = graph.real_inputs[0].name
    if input_layout == NHWC:
        input_name, note = _nchw_input(out, graph, names)
        changes.append(note)
    elif input_layout != NCHW:
        raise ValueError(f"unknown input layout {input_layout}")
    if tail.softmax is not None:
        changes.append(f"logits: the input of the final {tail.softmax.op_type} '{tail.softmax.name}' (dropped)")
    _prune(out)
    return CamGraph(out, mapping, input_name, changes)
