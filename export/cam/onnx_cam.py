"""``python -m export onnx-cam IN.onnx --out models/NAME.onnx``: any ONNX GAP -> linear classifier made ready for
/cam, with ``onnx`` and ``onnxruntime`` only (no torch on this path).

The last global average pooling the output depends on and the linear layer after it are found in the graph
(:mod:`export.cam.onnx_tail`), the graph is given the service's outputs (:mod:`export.cam.onnx_rewrite`),
checked against the original on random images and a real photo (:mod:`export.cam.onnx_verify`), then written
with its sidecar.  A head that is not one linear layer (an MLP, MobileNetV3's conv -> hardswish -> linear) is split
at the GAP input (:mod:`export.cam.onnx_split`): the graph with ``features``, ``pooled``, ``logits`` as outputs, and
``NAME.head.onnx`` (features -> logits, and its exact gradient when it has one), named in the sidecar's ``head``;
``--no-split`` refuses such a head instead, naming its nodes.  A graph without GAP, or whose head branches, is
refused, with the nodes named.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shlex
from pathlib import Path
from typing import Any

from export.common.hashing import sha256_file
from export.common.logs import get_logger
from export.common.sidecar import stretch_input, write_sidecar

log = get_logger(__name__)


class OnnxCamError(RuntimeError):
    """The model cannot be made CAM-ready as it is; the message says what was found."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``python -m export onnx-cam``."""
    p = sub.add_parser(
        "onnx-cam",
        help="make any ONNX GAP -> linear classifier CAM-ready for /cam (onnx + onnxruntime, no torch)",
        description="Find GAP and the linear layer after it in an ONNX classifier, add the outputs /cam reads "
        "(features, pooled, logits, cam_weight, cam_bias), verify against the original, write it and its sidecar.",
    )
    p.add_argument("model", type=Path, help="the ONNX classifier (NCHW or NHWC float input)")
    p.add_argument("--out", type=Path, required=True, help="where to write it, e.g. models/NAME.onnx (+ NAME.json)")
    p.add_argument("--name", default=None, help="model name in the API (default: the --out file stem)")
    p.add_argument(
        "--labels", type=Path, default=None, help="JSON list of names or of {index,id,name} (default: class_i)"
    )
    p.add_argument("--mean", type=float, nargs=3, default=[0.0, 0.0, 0.0], help="per channel, after pixel/255")
    p.add_argument("--std", type=float, nargs=3, default=[1.0, 1.0, 1.0], help="per channel, after pixel/255")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="input size when not static")
    p.add_argument(
        "--no-split",
        action="store_true",
        help="refuse a head that is not one linear layer (default: split it into NAME.head.onnx, served by gradcam, "
        "ablationcam, reciprocam, scorecam, eigencam)",
    )
    p.set_defaults(func=run)


def read_labels(path: Path | None, classes: int) -> list[dict[str, Any]]:
    """Labels from ``path`` (a list of names, or of ``{index, id, name}`` in index order), or ``class_0`` ..."""
    if path is None:
        return [{"index": i, "id": f"class_{i}", "name": f"class_{i}"} for i in range(classes)]
    raw = json.loads(path.read_text())
    if not isinstance(raw, list):
        raise OnnxCamError(f"{path}: expected a JSON list of labels")
    labels = [{"index": i, "id": str(x), "name": str(x)} if isinstance(x, str) else dict(x) for i, x in enumerate(raw)]
    if len(labels) != classes:
        raise OnnxCamError(f"{path}: {len(labels)} labels for the model's {classes} classes")
    if any(lab.get("index") != i or "id" not in lab or "name" not in lab for i, lab in enumerate(labels)):
        raise OnnxCamError(f"{path}: each label needs index (0..{classes - 1}, in order), id and name")
    return labels


def _input_size(dims: list[int | None], layout: str, size: list[int] | None) -> tuple[int, int]:
    h, w = (dims[2], dims[3]) if layout == "NCHW" else (dims[1], dims[2])
    if h is not None and w is not None:
        if size is not None and tuple(size) != (h, w):
            raise OnnxCamError(f"--size {size[0]} {size[1]} differs from the graph's static input {h}x{w}")
        return h, w
    if size is None:
        raise OnnxCamError(f"the graph's input size is not static ({dims}): give --size H W")
    return size[0], size[1]


def convert(
    src: Path,
    out: Path,
    *,
    name: str | None = None,
    labels: Path | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    size: list[int] | None = None,
    command: str = "",
    no_split: bool = False,
    label_list: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Make ``src`` CAM-ready at ``out`` (+ sidecar, + ``NAME.head.onnx`` for a split head); returns the sidecar
    path and the verification report.  ``command`` is recorded in the provenance, ``extra`` added to it;
    ``label_list`` (already read) stands for ``labels``."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from export.cam.onnx_graph import NHWC, Graph, input_layout, node_label, run_model, static_dims
    from export.cam.onnx_rewrite import build_cam_graph
    from export.cam.onnx_tail import TailError, classify_head, find_gap, gap_candidates, walk_head
    from export.cam.onnx_verify import VerificationError, sample_inputs, verify_cam_graph

    if out.resolve() == src.resolve():
        raise OnnxCamError("--out must differ from the input model")
    model = onnx.load(str(src))
    graph = Graph(model)
    inputs = graph.real_inputs
    if len(inputs) != 1:
        raise OnnxCamError(f"the graph has {len(inputs)} inputs ({[i.name for i in inputs]}); one image input expected")
    dims = static_dims(inputs[0])
    if len(dims) != 4 or inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise OnnxCamError(f"input '{inputs[0].name}' is not a float32 4-D image tensor (dims {dims})")
    layout = input_layout(dims)
    h, w = _input_size(dims, layout, size)
    norm = {"scale": 1.0 / 255.0, "mean": list(mean or [0.0] * 3), "std": list(std or [1.0] * 3)}
    samples, samples_name = sample_inputs(h, w, norm)
    probe = samples["random_0"].transpose(0, 2, 3, 1).copy() if layout == NHWC else samples["random_0"]

    def shapes_of(tensors: list[str]) -> dict[str, tuple[int, ...]]:
        return {k: v.shape for k, v in run_model(model, [probe], tensors)[0].items()} if tensors else {}

    try:
        shapes = shapes_of([n.input[0] for n in gap_candidates(graph)])
        gap = find_gap(graph, shapes)
        head, stop = walk_head(graph, gap)
        shapes.update(shapes_of([t for t in (gap.pooled, *(n.output[0] for n in head)) if t not in shapes]))
        tail = classify_head(graph, gap, head, shapes, stop)
    except TailError as exc:
        raise OnnxCamError(f"{src}: {exc}") from exc
    if tail.reason is not None or tail.linear is None:
        if no_split or stop is not None:
            raise OnnxCamError(f"{src}: refused: {tail.reason}")
        from export.cam.onnx_split import SplitError, build_head_graph, verify_split

        try:
            split = build_head_graph(model, gap, head, shapes)
        except SplitError as exc:
            raise OnnxCamError(f"{src}: refused: cannot split the head ({tail.describe()}): {exc}") from exc
        tail.logits, tail.softmax, tail.reason = split.logits, split.softmax, None
    else:
        split = None
    assert tail.logits is not None
    if split is not None:
        classes = int(np.prod([int(d) for d in shapes[tail.logits][1:]]))
    else:
        assert tail.linear is not None
        classes = int(tail.linear.weight.shape[0])
    log.info(
        f"{src}: {layout} input {h}x{w}; GAP {node_label(gap.node)} over '{gap.features}' ({gap.layout}, "
        f"{gap.channels} channels {tuple(shapes[gap.features])}); tail {tail.describe()}; logits '{tail.logits}' "
        f"({classes} classes)"
    )
    if label_list is None:
        label_list = read_labels(labels, classes)
    elif len(label_list) != classes:
        raise OnnxCamError(f"{len(label_list)} labels for the model's {classes} classes")
    cam = build_cam_graph(model, tail, layout, shapes, classes=classes)
    try:
        if split is None:
            report = verify_cam_graph(model, layout, tail, cam, samples)
        else:
            feeds = list(samples.values())
            orig = [x.transpose(0, 2, 3, 1).copy() if layout == NHWC else x for x in feeds]
            report = verify_split(model, orig, cam, split, feeds, list(samples))
    except (VerificationError, ValueError) as exc:
        raise OnnxCamError(f"{src}: verification failed, nothing written: {exc}") from exc

    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(cam.model, str(out))
    head_block: dict[str, Any] | None = None
    if split is not None:
        head_path = out.with_name(f"{out.stem}.head.onnx")
        onnx.save(split.model, str(head_path))
        head_block = {
            "file": head_path.name,
            "sha256": sha256_file(head_path),
            "input": "features",
            "output": split.output,
            "gradient": split.gradient,
            "pooled_head": True,
            "nodes": split.nodes,
            "note": split.note or "gradient: d logits / d pooled, written by the chain rule (export.cam.onnx_jacobian)",
        }
        log.info(f"head split: {head_path.name} ({len(split.nodes)} nodes); {head_block['note']}")
    prov: dict[str, Any] = {
        "weights": f"{src.name} (sha256 {sha256_file(src)})",
        "data": "as trained by the model's author (not known to this exporter)",
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "exporter": f"onnx {onnx.__version__}, onnxruntime {ort.__version__} (python -m export onnx-cam, no torch)",
        "source_graph": {
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "opset": graph.opset,
            "input": inputs[0].name,
            "input_layout": layout,
            "gap": node_label(gap.node),
            "gap_layout": gap.layout,
            "features_tensor": gap.features,
            "head": [node_label(n) for n in head],
            "logits_tensor": tail.logits,
        },
        "changes": cam.changes,
        "verified_on": samples_name,
        "max_abs_diff_logits": report["max_abs_diff_logits"],
        **(extra or {}),
    }
    input_block = {**stretch_input(h), "name": cam.input_name, "width": w}
    meta: dict[str, Any] = {
        "name": name or out.stem,
        "task": "cam",
        "input": input_block,
        "normalization": norm,
        "outputs": cam.outputs,
        "labels": label_list,
        "provenance": prov,
        "metrics": {},
        "verification": report,
    }
    if head_block is not None:
        meta["head"] = head_block
    return write_sidecar(out, meta), report


def command_line(args: argparse.Namespace) -> str:
    """The ``python -m export onnx-cam ...`` line that gives ``args`` (recorded in the sidecar's provenance)."""
    argv = ["onnx-cam", str(args.model), "--out", str(args.out)]
    for flag in ("name", "labels"):
        if getattr(args, flag) is not None:
            argv += [f"--{flag}", str(getattr(args, flag))]
    for flag in ("mean", "std", "size"):
        if getattr(args, flag) is not None:
            argv += [f"--{flag}", *(str(v) for v in getattr(args, flag))]
    if getattr(args, "no_split", False):
        argv.append("--no-split")
    return "python -m export " + shlex.join(argv)


def run(args: argparse.Namespace) -> None:
    """Convert, verify and write; a refusal or failed check exits with its reason."""
    try:
        side, report = convert(
            args.model,
            args.out,
            name=args.name,
            labels=args.labels,
            mean=args.mean,
            std=args.std,
            size=args.size,
            command=command_line(args),
            no_split=args.no_split,
        )
    except OnnxCamError as exc:
        raise SystemExit(f"onnx-cam: {exc}") from exc
    print(json.dumps(report, indent=2))
    print(f"wrote {args.out} and {side}; restart the service (or reload its models) to serve it on /cam")
