"""Find the classifier tail of an ONNX graph: the last global average pooling (GAP) the outputs depend on, the
4-D volume it averages, and the nodes after it - then whether they are one linear layer (CAM applies as is).

GAP is a ``GlobalAveragePool``, a ``ReduceMean`` over the spatial axes of an NCHW ([2, 3]) or NHWC ([1, 2])
tensor (axes as attribute, or as input from opset 18; with or without keepdims), or an ``AveragePool`` whose
kernel covers the whole map.  One linear layer is a ``Gemm`` (transB, alpha, beta), a ``MatMul`` (+ ``Add``),
or a 1×1 ``Conv`` on the 1×1 map, with view ops (``Flatten``, ``Reshape``, ``Squeeze``, ``Transpose``, ...)
before or after it, and optionally a final ``Softmax`` (then the logits are its input).

:func:`find_gap` and :func:`walk_head` only locate; :func:`classify_head` says whether the head is one linear
layer (``Tail.linear``) or why not (``Tail.reason``, naming the nodes) - a later Grad-CAM path can take the
same ``Gap`` and head node list and split the head instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from export.cam.onnx_graph import NCHW, NHWC, Graph, attr, node_label

GAP_OPS = ("GlobalAveragePool", "ReduceMean", "AveragePool")
VIEW_OPS = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Dropout"})
LINEAR_OPS = frozenset({"Gemm", "MatMul", "Conv"})
SOFTMAX_OPS = frozenset({"Softmax", "LogSoftmax"})
Shapes = Mapping[str, Sequence[int]]


class TailError(ValueError):
    """The graph has no usable GAP classifier tail; the message says what was found."""


@dataclass
class Gap:
    """The global average pooling: its node, the volume it averages (in ``layout``) and its output."""

    node: onnx.NodeProto
    features: str
    layout: str
    pooled: str
    channels: int


@dataclass
class Linear:
    """The one linear layer after GAP, folded to ``logits = weight @ pooled + bias``."""

    nodes: list[onnx.NodeProto]
    weight: np.ndarray  # (classes, channels) float32
    bias: np.ndarray  # (classes,) float32


@dataclass
class Tail:
    """GAP, every node from its output to the model output (in order), and what they are."""

    gap: Gap
    head: list[onnx.NodeProto]
    logits: str | None = None  # the tensor that holds the logits (None when refused)
    linear: Linear | None = None
    softmax: onnx.NodeProto | None = None  # a final Softmax dropped from the CAM graph
    reason: str | None = None  # why the head is not one linear layer (None: it is)

    def describe(self) -> str:
        return " -> ".join(node_label(n) for n in [self.gap.node, *self.head])


def gap_candidates(graph: Graph) -> list[onnx.NodeProto]:
    """Every pooling node that might be a GAP, in graph order (their input shapes decide)."""
    return [n for n in graph.nodes if n.op_type in GAP_OPS]


def _reduce_axes(graph: Graph, node: onnx.NodeProto) -> list[int] | None:
    axes = attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        const = graph.constant(node.input[1])
        axes = None if const is None else [int(a) for a in const.reshape(-1)]
    return None if axes is None else [int(a) for a in axes]


def gap_layout(graph: Graph, node: onnx.NodeProto, shapes: Shapes) -> str | None:
    """The layout of the volume ``node`` averages when ``node`` is a global average over its spatial axes, else None."""
    shape = shapes.get(node.input[0]) if node.input else None
    if shape is None or len(shape) != 4:
        return None
    if node.op_type == "GlobalAveragePool":
        return NCHW
    if node.op_type == "ReduceMean":
        axes = _reduce_axes(graph, node)
        if not axes:  # none given: all axes (batch too), or no-op
            return None
        norm = sorted({a % 4 for a in axes})
        return {(2, 3): NCHW, (1, 2): NHWC}.get((norm[0], norm[-1]) if len(norm) == 2 else (0, 0))
    if node.op_type == "AveragePool":
        kernel = [int(k) for k in attr(node, "kernel_shape", [])]
        pads = [int(p) for p in attr(node, "pads", [0, 0, 0, 0])]
        auto_pad = attr(node, "auto_pad", "NOTSET")
        if kernel == [int(s) for s in shape[2:]] and not any(pads) and auto_pad in ("NOTSET", "VALID"):
            return NCHW
    return None


def find_gap(graph: Graph, shapes: Shapes) -> Gap:
    """The last GAP the model's outputs depend on; ``TailError`` (naming the pooling nodes seen) when none."""
    live = graph.ancestors_of_outputs()
    seen: list[str] = []
    for node in reversed(gap_candidates(graph)):
        layout = gap_layout(graph, node, shapes) if graph.index(node) in live else None
        if layout is None:
            seen.append(f"{node_label(node)} on {tuple(shapes.get(node.input[0], ()))}")
            continue
        shape = shapes[node.input[0]]
        return Gap(node, node.input[0], layout, node.output[0], int(shape[1] if layout == NCHW else shape[3]))
    found = f"; pooling nodes seen, none a global average over the map: {', '.join(reversed(seen))}" if seen else ""
    raise TailError(
        "no global average pooling found (GlobalAveragePool, ReduceMean over H,W, or an AveragePool covering the "
        f"map) that feeds the output{found}: CAM needs a GAP -> linear classifier"
    )


def walk_head(graph: Graph, gap: Gap) -> tuple[list[onnx.NodeProto], str | None]:
    """The chain of nodes from the GAP output while each tensor feeds exactly one node (shape reads aside), and
    the reason it stopped early (a branch, or a tensor no output depends on), or None when it reached an output."""
    head: list[onnx.NodeProto] = []
    tensor = gap.pooled
    outputs = set(graph.outputs)
    while True:
        consumers = list({graph.index(n): n for n in graph.data_consumers(tensor)}.values())
        if not consumers:
            if tensor in outputs:
                return head, None
            return head, f"'{tensor}' feeds no node and is not an output"
        if len(consumers) > 1:
            names = ", ".join(node_label(n) for n in consumers)
            return head, f"'{tensor}' feeds {len(consumers)} nodes ({names}): a branching head"
        node = consumers[0]
        head.append(node)
        tensor = node.output[0]


def _as_vector(value: np.ndarray, classes: int) -> np.ndarray | None:
    """A bias-like constant as ``(classes,)`` (from a scalar, (classes,), (1, classes), (1, classes, 1, 1), ...)."""
    if value.size == 1:
        return np.full(classes, float(value.reshape(-1)[0]), dtype=np.float64)
    if value.size == classes:
        return value.astype(np.float64).reshape(classes)
    return None


Folded = tuple[np.ndarray, np.ndarray | None] | str  # (W (classes, K), b (classes,) or None: ill-shaped) or why not


def _optional(graph: Graph, node: onnx.NodeProto, i: int, default: np.ndarray) -> np.ndarray | None:
    """Constant input ``i`` of ``node``, ``default`` when absent, None when it is not a constant."""
    return graph.constant(node.input[i]) if len(node.input) > i and node.input[i] else default


def _gemm(graph: Graph, node: onnx.NodeProto, label: str) -> Folded:
    if attr(node, "transA", 0):
        return f"{label} has transA=1"
    b = graph.constant(node.input[1])
    c = _optional(graph, node, 2, np.zeros(1))
    if b is None or c is None or b.ndim != 2:
        return f"{label}: its weight or bias is not a constant 2-D tensor"
    w = (b if attr(node, "transB", 0) else b.T).astype(np.float64) * float(attr(node, "alpha", 1.0))
    return w, _as_vector(c * float(attr(node, "beta", 1.0)), w.shape[0])


def _matmul(graph: Graph, node: onnx.NodeProto, label: str) -> Folded:
    b = graph.constant(node.input[1])
    if b is None or b.ndim != 2:
        return f"{label}: its weight '{node.input[1]}' is not a constant 2-D tensor"
    return b.T.astype(np.float64), np.zeros(b.shape[1])


def _conv(graph: Graph, node: onnx.NodeProto, label: str, in_shape: Sequence[int] | None) -> Folded:
    k = graph.constant(node.input[1])
    if k is None or k.ndim != 4 or k.shape[2:] != (1, 1):
        return f"{label} is not a 1×1 convolution with constant weights"
    if int(attr(node, "group", 1)) != 1 or any(int(p) for p in attr(node, "pads", [])):
        return f"{label} is grouped or padded"
    if in_shape is not None and tuple(in_shape[2:]) != (1, 1):
        return f"{label} runs on a {tuple(in_shape[2:])} map, not the 1×1 pooled one"
    c = _optional(graph, node, 2, np.zeros(k.shape[0]))
    if c is None:
        return f"{label}: its bias is not a constant"
    return k.reshape(k.shape[0], k.shape[1]).astype(np.float64), _as_vector(c, k.shape[0])


def _linear(graph: Graph, node: onnx.NodeProto, data: str, channels: int, shapes: Shapes) -> Linear | str:
    """``node`` (fed ``data``) folded to ``W @ x + b``, or why it cannot be."""
    label = node_label(node)
    if node.input[0] != data:
        return f"{label} takes the pooled vector as its second input"
    if node.op_type == "Gemm":
        folded = _gemm(graph, node, label)
    elif node.op_type == "MatMul":
        folded = _matmul(graph, node, label)
    else:
        folded = _conv(graph, node, label, shapes.get(data))
    if isinstance(folded, str):
        return folded
    w, bias = folded
    if w.shape[1] != channels:
        return f"{label} maps {w.shape[1]} inputs, but GAP gives {channels} channels"
    if bias is None:
        return f"{label}: its bias does not broadcast to ({w.shape[0]},)"
    return Linear([node], w, bias)


def classify_head(graph: Graph, gap: Gap, head: list[onnx.NodeProto], shapes: Shapes, stop: str | None) -> Tail:
    """Whether ``head`` is view ops, one linear layer, view ops / constant ``Add`` (folded into the bias) and an
    optional final Softmax; ``Tail.reason`` says which node breaks that pattern otherwise."""
    tail = Tail(gap, head)
    chain = tail.describe()
    tensor = gap.pooled
    linear: Linear | None = None
    for i, node in enumerate(head):
        label, op = node_label(node), node.op_type
        if op in VIEW_OPS:
            pass
        elif op in LINEAR_OPS:
            if linear is not None:
                tail.reason = f"a second linear layer {label} after {node_label(linear.nodes[0])} ({chain})"
                return tail
            found = _linear(graph, node, tensor, gap.channels, shapes)
            if isinstance(found, str):
                tail.reason = f"{found} ({chain})"
                return tail
            linear = found
        elif op == "Add" and linear is not None:
            other = next((n for n in node.input if n != tensor), "")
            const = graph.constant(other)
            vec = None if const is None else _as_vector(const, linear.weight.shape[0])
            if vec is None:
                tail.reason = f"{label} after the linear layer adds a non-constant or ill-shaped tensor ({chain})"
                return tail
            linear.bias = linear.bias + vec
            linear.nodes.append(node)
        elif op in SOFTMAX_OPS and linear is not None and i == len(head) - 1:
            tail.softmax = node
            break
        else:
            where = f"after the linear layer {node_label(linear.nodes[0])}" if linear else "before any linear layer"
            tail.reason = (
                f"the head after GAP is not one linear layer: {label} {where} ({chain}); CAM on the GAP input "
                "needs GAP -> linear (without --no-split, such a head is split for the other methods)"
            )
            return tail
        tensor = node.output[0]
    if stop is not None:
        tail.reason = f"{stop} ({chain})"
    elif linear is None:
        tail.reason = f"no linear layer after GAP ({chain}): the pooled vector is the output"
    else:
        tail.linear = linear
        tail.logits = tensor
        linear.weight = linear.weight.astype(np.float32)
        linear.bias = linear.bias.astype(np.float32)
    return tail
