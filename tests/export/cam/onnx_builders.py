"""Tiny seeded ONNX classifiers (32×32 input, a few channels) of the shapes ``onnx-cam`` meets in the wild: torch
exports (ResNet-style GAP -> Flatten -> Gemm, MobileNetV3-style head, GAP -> 1×1 conv, no GAP) and graphs written
with ``onnx.helper`` as tf2onnx / Keras writes them (NHWC input, ReduceMean over H,W, MatMul + Add, Softmax)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CLASSES = 5


def _torch_export(module: Any, path: Path, dynamic_hw: bool = False) -> Path:
    import torch

    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (torch.zeros(1, 3, 32, 32),),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": axes, "output": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return path


def _torch_module(kind: str) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(0)

    class SE(nn.Module):
        """Squeeze-excitation: a GAP inside the body, which is not the classifier's."""

        def __init__(self, c: int) -> None:
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Sequential(nn.Conv2d(c, 4, 1), nn.ReLU(), nn.Conv2d(4, c, 1), nn.Sigmoid())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.fc(self.pool(x))

    body = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1)
    )
    heads = {
        "resnet": nn.Sequential(SE(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, CLASSES)),
        "mobilenetv3": nn.Sequential(
            nn.Hardswish(),
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(16, 12, 1),
            nn.Hardswish(),
            nn.Flatten(),
            nn.Linear(12, CLASSES),
        ),
        "gap_conv": nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, CLASSES, 1), nn.Flatten()),
        "no_gap": nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(16 * 8 * 8, CLASSES)),
    }
    model = nn.Sequential(body, heads[kind])
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        model[0][1].running_mean.uniform_(-0.5, 0.5)
        model[0][1].running_var.uniform_(0.5, 2.0)
    return model.eval()


def resnet_style(path: Path) -> Path:
    """conv -> BN -> ReLU -> conv -> SE (a GAP of its own) -> ReLU -> GAP -> Flatten -> Gemm (torch.onnx)."""
    return _torch_export(_torch_module("resnet"), path)


def mobilenetv3_style(path: Path) -> Path:
    """... -> GAP -> 1×1 conv -> Hardswish -> Flatten -> Linear: an MLP head, not GAP -> one linear layer."""
    return _torch_export(_torch_module("mobilenetv3"), path)


def gap_conv_style(path: Path) -> Path:
    """... -> GlobalAveragePool -> 1×1 Conv -> Flatten, with a dynamic input size (needs ``--size``)."""
    return _torch_export(_torch_module("gap_conv"), path, dynamic_hw=True)


def no_gap(path: Path) -> Path:
    """... -> Flatten -> Linear over the whole map: no global average pooling."""
    return _torch_export(_torch_module("no_gap"), path)


def _init(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name=name)


def _conv_body(rng: np.random.Generator, x: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """Two strided 3×3 convs (3 -> 8 -> 16 channels), ReLU after each, on an NCHW tensor: 32×32 -> 8×8."""
    inits = [
        _init("conv1_w", rng.normal(0, 0.4, (8, 3, 3, 3))),
        _init("conv1_b", rng.normal(0, 0.1, 8)),
        _init("conv2_w", rng.normal(0, 0.2, (16, 8, 3, 3))),
        _init("conv2_b", rng.normal(0, 0.1, 16)),
    ]
    conv = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", [x, "conv1_w", "conv1_b"], ["c1"], name="conv1", **conv),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "conv2_w", "conv2_b"], ["c2"], name="conv2", **conv),
    ]
    return nodes, inits, "c2"


def _save(
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
    inp: onnx.ValueInfoProto,
    out: str,
    opset: int,
    path: Path,
) -> Path:
    graph = helper.make_graph(
        nodes, "tiny", [inp], [helper.make_tensor_value_info(out, TensorProto.FLOAT, [None, CLASSES])], inits
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tests.onnx_builders"
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def keras_style(path: Path, opset: int = 13, transpose_before_relu: bool = False) -> Path:
    """As tf2onnx writes a Keras model: NHWC input ``input_1`` (N, 32, 32, 3) -> Transpose to NCHW -> convs ->
    Transpose to NHWC -> ReduceMean over [1, 2] (GlobalAveragePooling2D) -> MatMul -> Add -> Softmax.

    ``opset`` 13: ReduceMean's axes as attribute, keepdims=0; 18: axes as an input, keepdims=1 and a Reshape to
    (N, K).  ``transpose_before_relu``: the last ReLU runs on the NHWC tensor, so the GAP input is not a
    Transpose of an NCHW volume (the CAM graph then transposes it back for ``features``)."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Transpose", ["input_1"], ["x_nchw"], name="transpose_in", perm=[0, 3, 1, 2])]
    body, inits, v = _conv_body(rng, "x_nchw")
    nodes += body
    if transpose_before_relu:
        nodes += [
            helper.make_node("Transpose", [v], ["v_nhwc"], name="transpose_out", perm=[0, 2, 3, 1]),
            helper.make_node("Relu", ["v_nhwc"], ["gap_in"], name="relu2"),
        ]
    else:
        nodes += [
            helper.make_node("Relu", [v], ["r2"], name="relu2"),
            helper.make_node("Transpose", ["r2"], ["gap_in"], name="transpose_out", perm=[0, 2, 3, 1]),
        ]
    if opset >= 18:
        inits.append(numpy_helper.from_array(np.array([1, 2], dtype=np.int64), name="gap_axes"))
        inits.append(numpy_helper.from_array(np.array([-1, 16], dtype=np.int64), name="flat_shape"))
        nodes += [
            helper.make_node(
                "ReduceMean", ["gap_in", "gap_axes"], ["gap4"], name="global_average_pooling2d", keepdims=1
            ),
            helper.make_node("Reshape", ["gap4", "flat_shape"], ["gap"], name="flatten"),
        ]
    else:
        nodes.append(
            helper.make_node(
                "ReduceMean", ["gap_in"], ["gap"], name="global_average_pooling2d", axes=[1, 2], keepdims=0
            )
        )
    inits += [
        _init("dense/kernel", rng.normal(0, 0.5, (16, CLASSES))),
        _init("dense/bias", rng.normal(0, 0.2, CLASSES)),
    ]
    nodes += [
        helper.make_node("MatMul", ["gap", "dense/kernel"], ["mm"], name="dense/MatMul"),
        helper.make_node("Add", ["mm", "dense/bias"], ["logits_pre"], name="dense/BiasAdd"),
        helper.make_node("Softmax", ["logits_pre"], ["dense"], name="dense/Softmax", axis=-1),
    ]
    inp = helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["unk__0", 32, 32, 3])
    return _save(nodes, inits, inp, "dense", opset, path)


def avgpool_style(path: Path, output: str = "scores") -> Path:
    """NCHW convs -> AveragePool whose 8×8 kernel covers the map -> Flatten -> Gemm(transB=0, alpha=0.5, beta=2),
    its output named ``output``."""
    rng = np.random.default_rng(4)
    nodes, inits, v = _conv_body(rng, "pixels")
    inits += [_init("fc_w", rng.normal(0, 0.5, (16, CLASSES))), _init("fc_b", rng.normal(0, 0.2, (1, CLASSES)))]
    nodes += [
        helper.make_node("Relu", [v], ["r2"], name="relu2"),
        helper.make_node("AveragePool", ["r2"], ["pool"], name="avgpool", kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], [output], name="fc", transB=0, alpha=0.5, beta=2.0),
    ]
    inp = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 3, 32, 32])
    return _save(nodes, inits, inp, output, 13, path)
