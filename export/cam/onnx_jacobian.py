"""The exact gradient of a classifier head as ONNX nodes: ``d logits / d pooled`` (N, classes, K), written by the
chain rule through the head's nodes, for Grad-CAM at serve time without an autograd.

Each tensor ``t`` of the head chain carries its Jacobian ``J_t = d t / d pooled`` as (N, D_t, K), ``D_t`` its
numbers per image (flattened in memory order): ``J_pooled = I``; a view op (Flatten, Reshape, Squeeze, ...) keeps
it; a linear layer ``W x + b`` (Gemm, MatMul, a 1×1 Conv on the 1×1 map) gives ``W @ J``; a constant
``Add``/``Sub`` keeps it, a constant ``Mul``/``Div`` or ``BatchNormalization`` scales its rows; an elementwise
activation multiplies its rows by the derivative at the head's own values: ``Relu`` 1[x>0], ``LeakyRelu``,
``Sigmoid`` s(1-s), ``Tanh`` 1-t², ``HardSigmoid`` alpha·1[0<alpha·x+beta<1], ``HardSwish`` hs(x) + x/6·1[-3≤x≤3]
(torch's one-sided choice at the kinks).  Nothing is approximated: at every point where the head is
differentiable the result is its gradient, to float rounding; a node outside this list: no gradient (the
head is then served with the forward-only methods), the reason naming it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from export.cam.onnx_graph import Graph, attr, node_label

VIEWS = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout"})
ACTIVATIONS = frozenset({"Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish"})


class NoGradient(ValueError):
    """A head node whose derivative is not written here; the message names it."""


@dataclass
class _Builder:
    graph: Graph
    shapes: Mapping[str, Sequence[int]]
    opset: int
    prefix: str = "grad"
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[onnx.TensorProto] = field(default_factory=list)
    count: int = 0

    def name(self, what: str) -> str:
        self.count += 1
        return f"{self.prefix}/{self.count}_{what}"

    def const(self, value: np.ndarray | np.generic | float, what: str) -> str:
        """An initializer holding ``value`` (a Python float: float32)."""
        name = self.name(what)
        arr = np.asarray(value, dtype=np.float32) if isinstance(value, float) else np.asarray(value)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name=name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], what: str, **attrs: Any) -> str:
        out = self.name(what)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def flat(self, tensor: str) -> str:
        """``tensor`` as (N, D)."""
        return self.op("Flatten", [tensor], "flat", axis=1)

    def rows(self, jac: str, scale: str) -> str:
        """``J * scale[..., None]``: each row of the Jacobian times a (N, D) or (D,) factor."""
        if self.opset >= 13:
            axes = self.const(np.array([-1], dtype=np.int64), "axes")
            col = self.op("Unsqueeze", [scale, axes], "col")
        else:
            col = self.op("Unsqueeze", [scale], "col", axes=[-1])
        return self.op("Mul", [col, jac], "jac")

    def between(self, x: str, lo: float, hi: float) -> str:
        """1.0 where ``lo <= x <= hi`` (``<`` for opset < 12), else 0.0."""
        ge, le = ("GreaterOrEqual", "LessOrEqual") if self.opset >= 12 else ("Greater", "Less")
        a = self.op(ge, [x, self.const(np.float32(lo), "lo")], "ge")
        b = self.op(le, [x, self.const(np.float32(hi), "hi")], "le")
        return self.op("Cast", [self.op("And", [a, b], "and")], "mask", to=onnx.TensorProto.FLOAT)


def _weight(graph: Graph, node: onnx.NodeProto, shapes: Mapping[str, Sequence[int]]) -> np.ndarray:
    """``W`` (D_out, D_in) of a linear node fed the chain tensor as its first input."""
    label = node_label(node)
    if node.op_type == "Gemm":
        b = graph.constant(node.input[1])
        if b is None or b.ndim != 2 or attr(node, "transA", 0):
            raise NoGradient(f"{label}: transA, or a weight that is not a constant 2-D tensor")
        w = b if attr(node, "transB", 0) else b.T
        return np.asarray(w, dtype=np.float64) * float(attr(node, "alpha", 1.0))
    if node.op_type == "MatMul":
        b = graph.constant(node.input[1])
        if b is None or b.ndim != 2:
            raise NoGradient(f"{label}: its weight is not a constant 2-D tensor")
        return np.asarray(b.T, dtype=np.float64)
    k = graph.constant(node.input[1])
    in_shape = tuple(shapes.get(node.input[0], ()))
    if k is None or k.ndim != 4 or k.shape[2:] != (1, 1) or int(attr(node, "group", 1)) != 1 or in_shape[2:] != (1, 1):
        raise NoGradient(f"{label} is not an ungrouped 1×1 convolution with constant weights on the 1×1 map")
    return np.asarray(k.reshape(k.shape[0], k.shape[1]), dtype=np.float64)


def _scale(graph: Graph, node: onnx.NodeProto, x: str, shapes: Mapping[str, Sequence[int]]) -> np.ndarray:
    """The per-number factor (D,) of a constant ``Mul``/``Div`` or a ``BatchNormalization``."""
    shape = tuple(int(s) for s in shapes[x])
    if node.op_type == "BatchNormalization":
        gamma, var = graph.constant(node.input[1]), graph.constant(node.input[4])
        if gamma is None or var is None:
            raise NoGradient(f"{node_label(node)}: its scale or variance is not a constant")
        c = gamma / np.sqrt(var + float(attr(node, "epsilon", 1e-5)))
        c = c.reshape(-1, *([1] * (len(shape) - 2)))
    else:
        other = next(i for i in node.input if i != x)
        const = graph.constant(other)
        if const is None or node.input[0] != x:
            raise NoGradient(f"{node_label(node)}: not the chain tensor times (or over) a constant")
        c = 1.0 / const if node.op_type == "Div" else const
    if np.broadcast_shapes(np.shape(c), shape) != shape:
        raise NoGradient(f"{node_label(node)}: its constant {np.shape(c)} broadcasts beyond {shape}")
    out: np.ndarray = np.broadcast_to(np.asarray(c, dtype=np.float64), shape)[0].reshape(-1)
    return out


def _activation(b: _Builder, node: onnx.NodeProto, x: str) -> str:
    """The derivative (N, D) of an elementwise activation at its input ``x``."""
    op, xf = node.op_type, b.flat(x)
    if op == "Relu":
        return b.op("Cast", [b.op("Greater", [xf, b.const(np.float32(0), "zero")], "pos")], "d", to=1)
    if op == "LeakyRelu":
        pos = b.op("Greater", [xf, b.const(np.float32(0), "zero")], "pos")
        alpha = float(attr(node, "alpha", 0.01))
        return b.op("Where", [pos, b.const(np.float32(1), "one"), b.const(alpha, "alpha")], "d")
    if op in ("Sigmoid", "Tanh"):
        yf = b.flat(node.output[0])
        if op == "Sigmoid":
            return b.op("Mul", [yf, b.op("Sub", [b.const(np.float32(1), "one"), yf], "1-s")], "d")
        return b.op("Sub", [b.const(np.float32(1), "one"), b.op("Mul", [yf, yf], "t2")], "d")
    if op == "HardSigmoid":
        alpha, beta = float(attr(node, "alpha", 0.2)), float(attr(node, "beta", 0.5))
        v = b.op(
            "Add", [b.op("Mul", [xf, b.const(np.float32(alpha), "alpha")], "ax"), b.const(np.float32(beta), "b")], "v"
        )
        inside = b.op(
            "Mul",
            [
                b.op("Cast", [b.op("Greater", [v, b.const(np.float32(0), "zero")], "gt")], "m0", to=1),
                b.op("Cast", [b.op("Less", [v, b.const(np.float32(1), "one")], "lt")], "m1", to=1),
            ],
            "in",
        )
        return b.op("Mul", [inside, b.const(np.float32(alpha), "alpha")], "d")
    # HardSwish: x * hardsigmoid(x; 1/6, 1/2)
    hs = b.op("HardSigmoid", [xf], "hs", alpha=1.0 / 6.0, beta=0.5)
    slope = b.op("Mul", [b.between(xf, -3.0, 3.0), b.const(np.float32(1.0 / 6.0), "sixth")], "slope")
    return b.op("Add", [hs, b.op("Mul", [xf, slope], "xs")], "d")


def gradient_nodes(
    graph: Graph,
    head: Sequence[onnx.NodeProto],
    pooled: str,
    logits: str,
    shapes: Mapping[str, Sequence[int]],
    output: str = "gradient",
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes and initializers computing ``output`` = d ``logits`` / d ``pooled`` (N, classes, K) from the head chain
    ``head`` (the nodes from ``pooled`` to ``logits``, in order; ``shapes`` the measured shape of each tensor);
    ``NoGradient`` naming the first node it cannot differentiate."""
    b = _Builder(graph, shapes, graph.opset)
    k = int(np.prod(shapes[pooled][1:]))
    pf = b.flat(pooled)
    if b.opset >= 13:
        zero = b.op(
            "Unsqueeze", [b.op("Mul", [pf, b.const(np.float32(0), "zero")], "z"), b.const(np.array([-1]), "ax")], "z3"
        )
    else:
        zero = b.op("Unsqueeze", [b.op("Mul", [pf, b.const(np.float32(0), "zero")], "z")], "z3", axes=[-1])
    jac = b.op("Add", [zero, b.const(np.eye(k, dtype=np.float32)[None], "eye")], "jac")  # (N, K, K)
    tensor = pooled
    for node in head:
        if tensor == logits:
            break
        label, op = node_label(node), node.op_type
        if tensor not in node.input:
            raise NoGradient(f"{label} does not take the chain tensor '{tensor}'")
        if op in VIEWS or (op == "Transpose" and sum(int(s) > 1 for s in shapes[tensor][1:]) <= 1):
            pass
        elif op in ("Gemm", "MatMul", "Conv"):
            if node.input[0] != tensor:
                raise NoGradient(f"{label} takes the chain tensor as its second input")
            jac = b.op("MatMul", [b.const(_weight(graph, node, shapes).astype(np.float32), "w"), jac], "jac")
        elif op in ("Add", "Sub"):
            other = next((i for i in node.input if i != tensor), "")
            if graph.constant(other) is None:
                raise NoGradient(f"{label} adds a tensor that is not a constant")
            if op == "Sub" and node.input[0] != tensor:
                jac = b.op("Neg", [jac], "jac")
        elif op in ("Mul", "Div", "BatchNormalization"):
            jac = b.rows(jac, b.const(_scale(graph, node, tensor, shapes).astype(np.float32), "scale"))
        elif op in ACTIVATIONS:
            jac = b.rows(jac, _activation(b, node, tensor))
        else:
            raise NoGradient(
                f"{label}: no derivative written for {op} (only {sorted(ACTIVATIONS)}, linear and view ops)"
            )
        tensor = node.output[0]
    if tensor != logits:
        raise NoGradient(f"the chain from '{pooled}' does not reach the logits '{logits}'")
    b.nodes.append(helper.make_node("Identity", [jac], [output], name=f"{b.prefix}/out"))
    return b.nodes, b.inits
