"""Static int8 quantization of a bundled model, checked, evaluated and timed next to its fp32 original.

    python -m bench.perf_quantize --model efficientnet_lite0_imagenet [--format qdq] [--ship]
    python -m bench.perf_quantize --model efficientnet_lite0_tiny_localize --ship
    python -m bench.perf_quantize --model efficientnet_lite0_lsp_pose --ship
    python -m bench.perf_quantize --model efficientnet_lite0_person_box --scenes cache/person_scenes --ship

1. ``quant_pre_process`` (shape inference, graph optimization), then ``quantize_static`` (per-channel int8
   weights in a 7-bit range, so that x86 CPUs with and without VNNI compute the same integers; uint8
   activations; MinMax calibration) calibrated on real *training* images fed through the
   service's own decode + fit: Tiny ImageNet train for CAM and /localize models (``--calib-per-class`` per
   class, past the first 10 that the train-split metrics use), LSP train images 1-800 for pose models (every
   ``--calib-stride``-th, whole image as the person box), and for a person finder (``--scenes``) the
   training scenes of ``python -m export person-scenes`` (``--calib-images`` of them, evenly spaced).  The
   head stays float: the GAP -> dense tail (``ReduceMean``/``GlobalAveragePool``/``Gemm``/``MatMul``) and
   every node after the last ``Conv`` (box, soft-argmax), so ``features``, ``pooled``, ``logits``,
   ``cam_weight``, ``cam_bias`` remain outputs and ``mean(W.V) + b = logits`` holds; the server's own load
   check (``app.registry.load_model``) is run on it.
2. Accuracy, fp32 and int8 through the service functions, on data never trained on: CAM - ``bench.eval_cam``
   on the first ``--limit`` Tiny ImageNet val images (default 2,000); /localize - ``bench.eval_localize`` on
   Tiny ImageNet val (default all 10,000); pose - ``bench.eval_pose`` on LSP 801-1000; a person finder - the
   no-box pose of ``--pose-model`` on the held-out scenes, that model's finder replaced by each of the two.
3. Speed: ``session.run`` alone and the whole service function in-process, alternating the two models.

Writes ``artifacts/quant/`` (the model, its sidecar, ``report-<model>.json``); ``--ship`` copies both into
``models/`` (as ``<model>_int8``) with the numbers in the sidecar.  Needs ``../shared/data``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from app.config import REPO_MODELS, Settings
from app.model import PoseModel
from app.registry import LoadedModel, load_model
from app.runtime import limit_blas_threads
from app.services.cam import CamParams, run_cam
from app.services.common import Deadline, prepare
from app.services.localize import LocalizeParams, run_localize
from app.services.pose import PoseParams, run_pose
from app.sidecar import Task
from bench import eval_localize, eval_pose
from bench.eval_cam import evaluate, tiny_imagenet

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "tiny_imagenet_200"
LSP = ROOT.parent / "shared" / "data" / "lsp_train"
TAIL_OPS = ("ReduceMean", "GlobalAveragePool", "Gemm", "MatMul")


def calibration_images(data: Path, per_class: int, skip: int = 10) -> list[Path]:
    """``per_class`` train images of every class, after the first ``skip`` (used by the train-split metrics)."""
    out: list[Path] = []
    for wnid in (data / "wnids.txt").read_text().split():
        files = sorted((data / "train" / wnid / "images").glob("*.JPEG"), key=lambda p: int(p.stem.split("_")[-1]))
        out += files[skip : skip + per_class]
    return out


class Reader(CalibrationDataReader):  # type: ignore[misc]
    """Batches of one image, decoded and fitted exactly as the service does."""

    def __init__(self, model: LoadedModel, paths: list[Path], settings: Settings) -> None:
        self._it = iter(paths)
        self.model, self.settings = model, settings

    def get_next(self) -> dict[str, np.ndarray] | None:
        path = next(self._it, None)
        if path is None:
            return None
        batch = prepare(path.read_bytes(), self.model, self.settings).batch
        return {self.model.sidecar.input.name: batch}


def lsp_calibration_images(root: Path, stride: int) -> list[Path]:
    """Every ``stride``-th LSP training image (1-800; 801-1000 are the held-out evaluation)."""
    return eval_pose.lsp_images(root, range(0, 800, stride))


def scene_calibration_images(scenes: Path, n: int) -> list[Path]:
    """``n`` training scenes of ``python -m export person-scenes``, evenly spaced (its val scenes are the
    evaluation)."""
    rows = [line.split(",")[0] for line in (scenes / "train.csv").read_text().splitlines()[1:]]
    return [scenes / rows[i] for i in np.linspace(0, len(rows) - 1, min(n, len(rows))).round().astype(int)]


def float_nodes(graph: onnx.GraphProto, after_last_conv: bool = True) -> list[str]:
    """The head, kept float: the GAP -> dense tail and, with ``after_last_conv``, every node after the last
    ``Conv`` (a box head, a soft-argmax).  CAM models keep the tail only (so that the command reproduces the
    shipped CAM int8 model: its last activation is quantized)."""
    last_conv = max((i for i, n in enumerate(graph.node) if n.op_type == "Conv"), default=len(graph.node))
    return [n.name for i, n in enumerate(graph.node) if n.op_type in TAIL_OPS or (after_last_conv and i > last_conv)]


def sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def quantize(args: argparse.Namespace, fp32: LoadedModel, settings: Settings, out_dir: Path) -> tuple[Path, Path]:
    name = f"{args.model}_int8"
    prep = out_dir / f"{args.model}_prep.onnx"
    quant_pre_process(str(fp32.path), str(prep), skip_symbolic_shape=True)
    tail = float_nodes(onnx.load(str(prep)).graph, after_last_conv=fp32.sidecar.task is not Task.cam)
    if args.scenes is not None:
        paths = scene_calibration_images(args.scenes, args.calib_images)
        calib_text = f"{len(paths)} person-scenes training images (evenly spaced over {args.scenes.name}/train.csv)"
    elif fp32.sidecar.task is Task.pose:
        paths = lsp_calibration_images(args.lsp, args.calib_stride)
        calib_text = f"{len(paths)} LSP training images (1 in {args.calib_stride} of 1-800, whole image as the box)"
    else:
        paths = calibration_images(args.data, args.calib_per_class)
        calib_text = f"{len(paths)} Tiny ImageNet train images ({args.calib_per_class} per class, past the first 10)"
    t0 = time.perf_counter()
    out = out_dir / f"{name}.onnx"
    quantize_static(
        str(prep),
        str(out),
        Reader(fp32, paths, settings),
        quant_format=QuantFormat.QDQ if args.format == "qdq" else QuantFormat.QOperator,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        reduce_range=True,  # 7-bit weights: onnxruntime's u8s8 kernels without VNNI add products in 16 bits
        nodes_to_exclude=tail,
        calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}[args.calib],
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
    )
    calib_s = time.perf_counter() - t0
    sidecar = json.loads((fp32.path.with_suffix(".json")).read_text())
    sidecar.update(name=name, file=out.name, sha256=sha256(out))
    sidecar["quantization"] = {
        "method": "onnxruntime.quantization.quantize_static",
        "onnxruntime": ort.__version__,
        "format": args.format.upper(),
        "per_channel": True,
        "weights": "int8 (symmetric, 7-bit range: the same integers on x86 CPUs with and without VNNI)",
        "activations": "uint8 (asymmetric)",
        "calibration": f"{args.calib}, {calib_text}, through the service's decode + fit",
        "float_nodes": tail,
        "source": {"file": fp32.path.name, "sha256": fp32.sidecar.sha256},
        "seconds": round(calib_s, 1),
        "command": " ".join(["python -m bench.perf_quantize", *args.argv]),
    }
    sidecar["metrics"] = {}
    side = out_dir / f"{name}.json"
    side.write_text(json.dumps(sidecar, indent=2) + "\n")
    return out, side


def service_call(task: Task) -> tuple[str, list[str], Any]:
    """(name, outputs its ``session.run`` asks for, the whole service function on image bytes) of a task."""
    if task is Task.cam:
        return (
            "run_cam",
            ["features", "logits"],
            lambda m, data, s: run_cam(m, data, CamParams(), s, Deadline.start(s.job_timeout_s)),
        )
    if task is Task.localize:
        return (
            "run_localize",
            ["logits", "box"],
            lambda m, data, s: run_localize(m, data, LocalizeParams(), s, Deadline.start(s.job_timeout_s)),
        )
    return (
        "run_pose",
        ["joints"],
        lambda m, data, s: run_pose(m, data, PoseParams(), s, Deadline.start(s.job_timeout_s)),
    )


def timing(
    models: dict[str, LoadedModel], settings: Settings, image: bytes, rounds: int, per_round: int
) -> dict[str, Any]:
    """Median ms of ``session.run`` and of the whole service function, the models alternating round by round."""
    name, outputs, call = service_call(next(iter(models.values())).sidecar.task)
    runs: dict[str, list[float]] = {k: [] for k in models}
    whole: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for key, m in models.items():
            batch = prepare(image, m, settings).batch
            m.run(batch, outputs)
            for _ in range(per_round):
                t0 = time.perf_counter()
                m.run(batch, outputs)
                runs[key].append((time.perf_counter() - t0) * 1000)
            for _ in range(per_round):
                t0 = time.perf_counter()
                call(m, image, settings)
                whole[key].append((time.perf_counter() - t0) * 1000)
    return {
        k: {
            "session_run_ms_p50": round(statistics.median(runs[k]), 2),
            f"{name}_ms_p50": round(statistics.median(whole[k]), 2),
        }
        for k in models
    }


def accuracy(
    args: argparse.Namespace, models: dict[str, LoadedModel], settings: Settings
) -> tuple[str, str, tuple[str, ...], dict[str, Any]]:
    """(sidecar metric key, command that re-measures it, the keys compared, {fp32/int8: metrics})."""
    task = next(iter(models.values())).sidecar.task
    if args.scenes is not None:  # a person finder: scored by the pose it frames
        pose = load_model(REPO_MODELS / f"{args.pose_model}.json", settings)
        if not isinstance(pose, PoseModel):
            raise SystemExit(f"{args.pose_model} is not a pose model")
        acc = {}
        for k, m in models.items():
            res = eval_pose.evaluate_scenes(dataclasses.replace(pose, person=m), args.scenes, settings)["all"]
            acc[k] = {**res["no_box"], **{key: v for key, v in res.items() if key.startswith("person_box")}}
        return (
            "person_scenes_val_no_box",
            f"python -m bench.eval_pose --model <a pose model whose person_model is {{name}}> --scenes {args.scenes}",
            ("pcp_mean", "pck@0.2", "person_box_iou_mean", "person_box_iou>=0.5"),
            acc,
        )
    if task is Task.pose:
        acc = {k: eval_pose.evaluate(m, args.lsp, settings) for k, m in models.items()}
        return "lsp_801_1000", "python -m bench.eval_pose --model {name}", ("pcp_mean", "pck@0.2"), acc
    samples = tiny_imagenet(args.data, "val")
    if task is Task.localize:
        limit = args.limit or len(samples)
        per = {k: eval_localize.per_image(m, samples[:limit], settings) for k, m in models.items()}
        acc = {k: eval_localize.summarize(*v) for k, v in per.items()}
        (ok32, iou32), (ok8, iou8) = per["fp32"], per["int8"]
        acc["int8"]["paired_vs_fp32"] = {
            "top1": eval_localize.paired(ok32, ok8),
            "top1_loc": eval_localize.paired(ok32 & (iou32 >= 0.5), ok8 & (iou8 >= 0.5)),
        }
        keys: tuple[str, ...] = ("top1", "mean_iou", "gt_known_loc", "top1_loc")
        return (
            f"tiny_imagenet_val{limit}_localize",
            f"python -m bench.eval_localize --model {{name}} --limit {limit}",
            keys,
            acc,
        )
    limit = args.limit or 2000
    wnids = (args.data / "wnids.txt").read_text().split()
    acc = {k: evaluate(m, samples[:limit], settings, wnids) for k, m in models.items()}
    keys = ("top1_restricted_200", "gt_known_loc_default", "top1_1000", "top5_1000", "top1_loc_restricted_200")
    return (
        f"tiny_imagenet_val{limit}_cam",
        f"python -m bench.eval_cam --split val --model {{name}} --limit {limit}",
        keys,
        acc,
    )


def main() -> None:
    import sys

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet_lite0_imagenet")
    ap.add_argument("--data", type=Path, default=DATA, help="Tiny ImageNet (CAM and /localize models)")
    ap.add_argument("--lsp", type=Path, default=LSP, help="LSP (pose models)")
    ap.add_argument("--format", choices=["qdq", "qop"], default="qdq")
    ap.add_argument("--calib", choices=["minmax", "percentile"], default="minmax")
    ap.add_argument("--calib-per-class", type=int, default=2, help="Tiny ImageNet train images per class")
    ap.add_argument("--calib-stride", type=int, default=2, help="pose: every n-th LSP training image")
    ap.add_argument("--scenes", type=Path, default=None, help="a person finder: its person-scenes folder")
    ap.add_argument("--calib-images", type=int, default=400, help="person finder: training scenes to calibrate on")
    ap.add_argument("--pose-model", default="efficientnet_lite0_lsp_pose", help="person finder: the pose it frames")
    ap.add_argument(
        "--limit", type=int, default=0, help="val images for the accuracy comparison (0: the task's default)"
    )
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads for evaluation and timing")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "artifacts" / "quant")
    ap.add_argument("--ship", action="store_true", help="copy the model and its sidecar into models/")
    raw = sys.argv[1:]
    args = ap.parse_args(raw)
    args.argv = raw
    args.out_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(intra_op_threads=args.threads, max_concurrency=1)
    limit_blas_threads(settings.blas_threads)
    fp32 = load_model(REPO_MODELS / f"{args.model}.json", settings)
    onnx_path, side = quantize(args, fp32, settings, args.out_dir)
    int8 = load_model(side, settings)  # the server's own checks: outputs present, CAM identity
    print(
        f"{onnx_path}: {onnx_path.stat().st_size / 1e6:.1f} MB (fp32 {fp32.path.stat().st_size / 1e6:.1f} MB); server load check passed"
    )

    from bench.photos import photo_jpeg

    photo = photo_jpeg(640, 480, "astronaut" if fp32.sidecar.task is Task.pose else "chelsea")
    models = {"fp32": fp32, "int8": int8}
    speed = timing(models, settings, photo, rounds=5, per_round=20)
    print("speed:", json.dumps(speed))

    metric, command, keys, acc = accuracy(args, models, settings)
    summary = {k: {key: acc[k][key] for key in keys} for k in acc}
    delta = {key: round(acc["int8"][key] - acc["fp32"][key], 4) for key in keys}
    print("accuracy:", json.dumps(summary), "int8 - fp32:", json.dumps(delta))

    report = {
        "model": args.model,
        "file_mb": {"fp32": round(fp32.path.stat().st_size / 1e6, 2), "int8": round(onnx_path.stat().st_size / 1e6, 2)},
        "speed_threads": args.threads,
        "speed": speed,
        "accuracy_metric": metric,
        "accuracy": summary,
        "int8_minus_fp32": delta,
    }
    (args.out_dir / f"report-{args.model}.json").write_text(json.dumps(report, indent=2) + "\n")
    meta = json.loads(side.read_text())
    meta["metrics"][metric] = {**acc["int8"], "command": command.format(name=meta["name"])}
    meta["quantization"]["fp32_reference"] = {
        metric: {key: acc["fp32"][key] for key in keys},
        "int8_minus_fp32": delta,
        "speed": report["speed"],
        "speed_note": f"median ms, {args.threads} onnxruntime thread(s), 640x480 JPEG, models alternating",
    }
    side.write_text(json.dumps(meta, indent=2) + "\n")
    if args.ship:
        shutil.copy2(onnx_path, REPO_MODELS / onnx_path.name)
        shutil.copy2(side, REPO_MODELS / side.name)
        print(f"shipped {REPO_MODELS / onnx_path.name} and its sidecar")


if __name__ == "__main__":
    main()
