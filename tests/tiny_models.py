"""Tiny, seeded ONNX models that follow the service's contract, built with onnx.helper (no torch).

conv(3->K, kernel = stride = 8) -> ReLU = ``features`` (N, K, S/8, S/8); GAP = ``pooled``;
dense = ``logits``; the dense weights exposed as ``cam_weight`` / ``cam_bias``; plus a ``box``
head (localize) or ``joints`` / ``joint_visibility`` heads (pose).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

JOINT_NAMES = [
    "r_ankle",
    "r_knee",
    "r_hip",
    "l_hip",
    "l_knee",
    "l_ankle",
    "r_wrist",
    "r_elbow",
    "r_shoulder",
    "l_shoulder",
    "l_elbow",
    "l_wrist",
    "neck",
    "head_top",
]
EDGES = [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [6, 7], [7, 8], [8, 9], [9, 10], [10, 11], [12, 13]]


def _init(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(arr.astype(np.float32), name)


def _sidecar(
    path: Path,
    task: str,
    size: int,
    outputs: Iterable[str],
    labels: list[dict[str, Any]],
    seed: int,
    edit: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Write the sidecar of the model saved at ``path`` (``<stem>.json``, its ``sha256`` of the file) and return
    its path: the fields every tiny model shares, ``outputs`` named as themselves, then ``extra``; ``edit``:
    fields to set (``None``: to remove) last."""
    sidecar: dict[str, Any] = {
        "schema_version": 1,
        "name": path.stem,
        "task": task,
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "input": {
            "name": "image",
            "layout": "NCHW",
            "height": size,
            "width": size,
            "channels": "RGB",
            "fit": "stretch",
            "pre_resize": None,
            "resample": "bilinear",
        },
        "normalization": {"scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        "outputs": {n: n for n in outputs},
        "labels": labels,
        "provenance": {"weights": f"random, seed {seed}", "data": "none", "command": "tests/tiny_models.py"},
        "metrics": {},
        **extra,
    }
    for key, value in (edit or {}).items():
        if value is None:
            sidecar.pop(key, None)
        else:
            sidecar[key] = value
    side = path.with_suffix(".json")
    side.write_text(json.dumps(sidecar, indent=2))
    return side


def build(
    task: str,
    path: Path,
    size: int = 32,
    channels: int = 6,
    classes: int = 4,
    seed: int = 0,
    edit: dict[str, Any] | None = None,
) -> Path:
    """Write ``path`` (.onnx) and its sidecar; return the sidecar path.  ``edit``: sidecar fields to set
    (``None``: to remove), e.g. to write a sidecar the service must refuse."""
    rng = np.random.default_rng(seed)
    inits = [
        _init("conv_w", rng.normal(0, 0.2, (channels, 3, 8, 8))),
        _init("conv_b", rng.normal(0, 0.1, (channels,))),
        _init("fc_w", rng.normal(0, 0.5, (classes, channels))),
        _init("fc_b", rng.normal(0, 0.1, (classes,))),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["conv"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Relu", ["conv"], ["features"]),
        helper.make_node("ReduceMean", ["features"], ["pooled"], axes=[2, 3], keepdims=0),
        helper.make_node("Gemm", ["pooled", "fc_w", "fc_b"], ["logits"], transB=1),
        helper.make_node("Identity", ["fc_w"], ["cam_weight"]),
        helper.make_node("Identity", ["fc_b"], ["cam_bias"]),
    ]
    grid = size // 8
    outputs = [
        helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", channels, grid, grid]),
        helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", channels]),
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes]),
        helper.make_tensor_value_info("cam_weight", TensorProto.FLOAT, [classes, channels]),
        helper.make_tensor_value_info("cam_bias", TensorProto.FLOAT, [classes]),
    ]
    extra: dict[str, Any] = {}
    if task == "localize":
        inits += [_init("box_w", rng.normal(0, 0.5, (4, channels))), _init("box_b", np.array([-1.0, -1.0, 0.5, 0.5]))]
        nodes += [
            helper.make_node("Gemm", ["pooled", "box_w", "box_b"], ["box_raw"], transB=1),
            helper.make_node("Sigmoid", ["box_raw"], ["box"]),
        ]
        outputs.append(helper.make_tensor_value_info("box", TensorProto.FLOAT, ["N", 4]))
        extra["box_format"] = "rchw_norm"
    if task == "pose":
        k = len(JOINT_NAMES)
        inits += [
            _init("j_w", rng.normal(0, 0.5, (2 * k, channels))),
            _init("j_b", np.zeros(2 * k)),
            _init("v_w", rng.normal(0, 0.5, (k, channels))),
            _init("v_b", np.zeros(k)),
        ]
        nodes += [
            helper.make_node("Gemm", ["pooled", "j_w", "j_b"], ["j_raw"], transB=1),
            helper.make_node("Sigmoid", ["j_raw"], ["joints"]),
            helper.make_node("Gemm", ["pooled", "v_w", "v_b"], ["v_raw"], transB=1),
            helper.make_node("Sigmoid", ["v_raw"], ["joint_visibility"]),
        ]
        outputs += [
            helper.make_tensor_value_info("joints", TensorProto.FLOAT, ["N", 2 * k]),
            helper.make_tensor_value_info("joint_visibility", TensorProto.FLOAT, ["N", k]),
        ]
        extra["joints"] = {"names": JOINT_NAMES, "edges": EDGES, "coords": "xy_norm_box"}
    graph = helper.make_graph(
        nodes,
        f"tiny_{task}",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    names = [o.name for o in outputs]
    if task == "pose":  # a pose model exposes only its joints (the CAM outputs stay internal)
        names = ["joints", "joint_visibility"]
    labels = [
        {"index": i, "id": f"n{i:08d}", "name": f"class {i}", "aliases": f"class {i}, thing{i}"} for i in range(classes)
    ]
    return _sidecar(path, task, size, names, [] if task == "pose" else labels, seed, edit, **extra)


def build_split(
    path: Path,
    size: int = 32,
    channels: int = 6,
    hidden: int = 5,
    classes: int = 4,
    seed: int = 0,
    head_edit: dict[str, Any] | None = None,
    head_seed: int | None = None,
) -> Path:
    """A CAM model whose head is an MLP (GAP -> dense -> ReLU -> dense), split as the exporters split it: ``path``
    (image -> ``features``, ``pooled``, ``logits``) and ``<stem>.head.onnx`` (``features`` -> ``logits`` and its
    exact ``gradient`` d logits / d pooled (N, classes, K)), named in the sidecar's ``head``; return the sidecar.
    ``head_edit``: fields of the ``head`` block to set; ``head_seed``: head weights that are not the model's."""
    rng = np.random.default_rng(seed)
    conv_w, conv_b = rng.normal(0, 0.2, (channels, 3, 8, 8)), rng.normal(0, 0.1, (channels,))
    w1, b1 = rng.normal(0, 0.6, (hidden, channels)), rng.normal(0, 0.2, (hidden,))
    w2, b2 = rng.normal(0, 0.6, (classes, hidden)), rng.normal(0, 0.1, (classes,))

    def mlp(x: str, w1: np.ndarray, b1: np.ndarray) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
        inits = [_init("w1", w1), _init("b1", b1), _init("w2", w2), _init("b2", b2)]
        nodes = [
            helper.make_node("Gemm", [x, "w1", "b1"], ["h"], transB=1),
            helper.make_node("Relu", ["h"], ["a"]),
            helper.make_node("Gemm", ["a", "w2", "b2"], ["logits"], transB=1),
        ]
        return nodes, inits

    grid = size // 8
    nodes, inits = mlp("pooled", w1, b1)
    nodes = [
        helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["conv"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Relu", ["conv"], ["features"]),
        helper.make_node("ReduceMean", ["features"], ["pooled"], axes=[2, 3], keepdims=0),
        *nodes,
    ]
    outputs = [
        helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", channels, grid, grid]),
        helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", channels]),
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_split",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])],
        outputs,
        [_init("conv_w", conv_w), _init("conv_b", conv_b), *inits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))

    if head_seed is not None:  # a head that is not this backbone's
        other = np.random.default_rng(head_seed)
        w1, b1 = other.normal(0, 0.6, (hidden, channels)), other.normal(0, 0.2, (hidden,))
    head_nodes, head_inits = mlp("pooled", w1, b1)
    # gradient = W2 @ diag(1[h > 0]) @ W1: (N, classes, K)
    head_nodes = [
        helper.make_node("GlobalAveragePool", ["features"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["pooled"], axis=1),
        *head_nodes,
        helper.make_node("Greater", ["h", "zero"], ["on"]),
        helper.make_node("Cast", ["on"], ["d"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["d", "last"], ["d3"]),
        helper.make_node("Mul", ["d3", "w1"], ["dw1"]),
        helper.make_node("MatMul", ["w2", "dw1"], ["gradient"]),
    ]
    head_inits += [_init("zero", np.zeros(1)), numpy_helper.from_array(np.array([-1], dtype=np.int64), "last")]
    head_graph = helper.make_graph(
        head_nodes,
        "tiny_head",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", channels, "R", "C"])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes]),
            helper.make_tensor_value_info("gradient", TensorProto.FLOAT, ["N", classes, channels]),
        ],
        head_inits,
    )
    head_model = helper.make_model(head_graph, opset_imports=[helper.make_opsetid("", 17)])
    head_model.ir_version = 8
    onnx.checker.check_model(head_model)
    head_path = path.with_name(f"{path.stem}.head.onnx")
    onnx.save(head_model, str(head_path))
    head = {
        "file": head_path.name,
        "sha256": hashlib.sha256(head_path.read_bytes()).hexdigest(),
        "input": "features",
        "output": "logits",
        "gradient": "gradient",
        "pooled_head": True,
        **(head_edit or {}),
    }
    labels = [{"index": i, "id": f"n{i:08d}", "name": f"class {i}"} for i in range(classes)]
    return _sidecar(path, "cam", size, ("features", "pooled", "logits"), labels, seed, head=head)
