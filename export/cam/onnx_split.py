"""Split a GAP classifier whose head is not one linear layer at the GAP input: the backbone (the whole graph, with
``features``, ``pooled`` and ``logits`` as outputs; :mod:`export.cam.onnx_rewrite`) and the head as a graph of its
own, ``features`` (N, K, R, C) -> GAP -> the head's nodes -> ``logits`` (N, classes), plus its exact gradient
``gradient`` = d logits / d pooled (N, classes, K) when every head node has a derivative
(:mod:`export.cam.onnx_jacobian`).  The head starts with GAP, so it gives the same on the pooled vector fed as
(N, K, 1, 1) (``pooled_head``), which is how the service runs it.  Verified: head(backbone(x)) = the original's
logits, on the volume and on its mean, and the gradient against central differences."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.cam.onnx_graph import Graph, node_label, run_model
from export.cam.onnx_jacobian import NoGradient, gradient_nodes
from export.cam.onnx_rewrite import CamGraph
from export.cam.onnx_tail import SOFTMAX_OPS, Gap

HEAD_INPUT = "features"
LOGITS_RTOL = 1e-4
GRADIENT_RTOL = 2e-2  # central differences in float32 against the exact gradient (a kink may fall in a step)


class SplitError(ValueError):
    """The head cannot be cut out as a graph of its own; the message names the node."""


@dataclass
class HeadGraph:
    """The head as its own model, its output names, the original tensor holding the logits, and notes."""

    model: onnx.ModelProto
    output: str
    gradient: str | None
    logits: str  # the tensor of the original graph that holds the logits (a final Softmax's input)
    softmax: onnx.NodeProto | None
    nodes: list[str]  # the head's nodes, as labels
    note: str | None = None  # why there is no gradient


def head_logits(head: Sequence[onnx.NodeProto], pooled: str) -> tuple[str, onnx.NodeProto | None]:
    """The tensor holding the logits at the end of ``head`` (the input of a final Softmax), and that Softmax."""
    if head and head[-1].op_type in SOFTMAX_OPS:
        return head[-1].input[0], head[-1]
    return (head[-1].output[0] if head else pooled), None


def _head_nodes(graph: Graph, gap: Gap, logits: str) -> list[onnx.NodeProto]:
    """Every node ``logits`` depends on after the pooled vector, in graph order; ``SplitError`` when one reads a
    tensor other than the pooled vector, constants and what they compute."""
    seen: dict[int, onnx.NodeProto] = {}
    inits = graph.initializers
    stack = [graph.producer[logits]] if logits in graph.producer else []
    while stack:
        node = stack.pop()
        if graph.index(node) in seen:
            continue
        if node is graph.producer.get(gap.pooled):
            continue
        seen[graph.index(node)] = node
        for name in node.input:
            if not name or name == gap.pooled or name in inits:
                continue
            if name not in graph.producer:
                raise SplitError(
                    f"{node_label(node)} in the head reads the graph input '{name}' besides the pooled vector"
                )
            stack.append(graph.producer[name])
    return [seen[i] for i in sorted(seen)]


def build_head_graph(
    model: onnx.ModelProto, gap: Gap, chain: Sequence[onnx.NodeProto], shapes: Mapping[str, Sequence[int]]
) -> HeadGraph:
    """The head of ``model`` after ``gap`` (``chain``: the nodes from the pooled vector to the output) as a model
    ``features`` (N, K, R, C) -> ``logits`` (N, classes) [+ ``gradient`` (N, classes, K)]."""
    graph = Graph(model)
    logits, softmax = head_logits(chain, gap.pooled)
    if logits == gap.pooled:
        raise SplitError("no node after GAP: the pooled vector is the output")
    nodes = _head_nodes(graph, gap, logits)
    used = graph.names() | {HEAD_INPUT}
    pooled4 = "head/pooled_nchw"
    shape = np.array([-1, *[int(s) for s in shapes[gap.pooled][1:]]], dtype=np.int64)
    out_name = "logits" if "logits" not in used else "head/logits"
    new = [
        helper.make_node("GlobalAveragePool", [HEAD_INPUT], [pooled4], name="head/gap"),
        helper.make_node("Reshape", [pooled4, "head/pooled_shape"], [gap.pooled], name="head/pooled"),
    ]
    copied = []
    for node in nodes:
        c = onnx.NodeProto()
        c.CopyFrom(node)
        copied.append(c)
    new += copied
    new.append(helper.make_node("Flatten", [logits], [out_name], name="head/logits", axis=1))
    inputs_used = {i for n in nodes for i in n.input}
    inits = [t for t in model.graph.initializer if t.name in inputs_used]
    inits.append(numpy_helper.from_array(shape, name="head/pooled_shape"))
    classes = int(np.prod(shapes[logits][1:]))
    outputs = [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", classes])]
    gradient: str | None = None
    note: str | None = None
    try:
        grad_nodes, grad_inits = gradient_nodes(graph, chain, gap.pooled, logits, shapes, output="gradient")
    except NoGradient as exc:
        note = f"no gradient graph (gradcam not served): {exc}"
    else:
        gradient = "gradient" if "gradient" not in used else "head/gradient"
        if gradient != "gradient":
            grad_nodes[-1].output[0] = gradient
        new += grad_nodes
        inits += grad_inits
        outputs.append(helper.make_tensor_value_info(gradient, TensorProto.FLOAT, ["N", classes, gap.channels]))
    features = helper.make_tensor_value_info(HEAD_INPUT, TensorProto.FLOAT, ["N", gap.channels, "R", "C"])
    head = helper.make_graph(new, "cam_head", [features], outputs, inits)
    out = helper.make_model(head, opset_imports=list(model.opset_import), producer_name="export.cam.onnx_split")
    out.ir_version = model.ir_version
    return HeadGraph(out, out_name, gradient, logits, softmax, [node_label(n) for n in nodes], note)


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def finite_differences(head: onnx.ModelProto, out: str, pooled: np.ndarray, step: float = 1e-2) -> np.ndarray:
    """``(classes, K)``: central differences of the head's logits at one pooled vector ``(K,)``."""
    k = pooled.size
    eps = step * max(1.0, float(np.max(np.abs(pooled))))
    batch = np.concatenate([pooled + eps * np.eye(k), pooled - eps * np.eye(k)]).astype(np.float32)
    (got,) = run_model(head, [batch[:, :, None, None]], [out])
    z = got[out].astype(np.float64)
    return np.asarray(((z[:k] - z[k:]) / (2 * eps)).T)


def verify_split(
    original: onnx.ModelProto,
    orig_feeds: Sequence[np.ndarray],
    cam: CamGraph,
    head: HeadGraph,
    feeds: Sequence[np.ndarray],
    names: Sequence[str],
) -> dict[str, Any]:
    """The backbone's logits against the original's, head(features) and head(mean features) against them, and the
    gradient against central differences; ``ValueError`` saying what differs."""
    for what, m in (("backbone", cam.model), ("head", head.model)):
        try:
            onnx.checker.check_model(m, full_check=True)
        except Exception as exc:
            raise ValueError(f"the ONNX checker rejects the {what} graph: {exc}") from exc
    refs = run_model(original, orig_feeds, [head.logits])
    gots = run_model(cam.model, feeds, [cam.outputs["features"], cam.outputs["logits"]])
    worst = {"logits": 0.0, "head": 0.0, "pooled_head": 0.0, "gradient": 0.0}
    head_outs = [head.output] + ([head.gradient] if head.gradient else [])
    for key, ref, got in zip(names, refs, gots, strict=True):
        feats, logits = got[cam.outputs["features"]], got[cam.outputs["logits"]]
        want = ref[head.logits].reshape(logits.shape[0], -1)
        scale = max(1.0, float(np.max(np.abs(want))))
        checks = {"logits": (logits, "the backbone's logits")}
        (on_volume,) = run_model(head.model, [feats], head_outs)
        (on_mean,) = run_model(head.model, [feats.mean(axis=(2, 3), keepdims=True)], head_outs)
        checks["head"] = (on_volume[head.output], "head(features)")
        checks["pooled_head"] = (on_mean[head.output], "head(mean of features)")
        for field, (value, what) in checks.items():
            err = _max_abs(value, want) if value.shape == want.shape else float("inf")
            if err > LOGITS_RTOL * scale:
                raise ValueError(f"{what} differs from the original's logits '{head.logits}' by {err:.3g} on {key}")
            worst[field] = max(worst[field], err)
        if head.gradient:
            exact = on_mean[head.gradient][0]
            approx = finite_differences(head.model, head.output, feats.mean(axis=(2, 3))[0])
            err = _max_abs(exact, approx)
            if err > GRADIENT_RTOL * max(1.0, float(np.max(np.abs(exact)))):
                raise ValueError(f"the head's gradient differs from central differences by {err:.3g} on {key}")
            worst["gradient"] = max(worst["gradient"], err)
    report: dict[str, Any] = {
        "max_abs_diff_logits": worst["logits"],
        "max_abs_diff_head_of_features_vs_logits": worst["head"],
        "max_abs_diff_head_of_pooled_vs_logits": worst["pooled_head"],
        "inputs": len(feeds),
    }
    if head.gradient:
        report["max_abs_diff_gradient_vs_central_differences"] = worst["gradient"]
    return report
