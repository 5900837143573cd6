"""onnxruntime's OpenVINO execution provider against its CPU provider, on the four bundled fp32 models.

    python -m bench.ep_openvino [--rounds 20 --block 5] [--images 200] [--json FILE]

in the service's venv (OpenVINO: the plugin ``onnxruntime-ep-openvino``, a requirement of the service, x86-64
only). For each model (``efficientnet_lite0_`` ``imagenet``, ``tiny_localize``, ``lsp_pose``, ``person_box``),
these sessions, all with the service's session options (``app.runtime.session_options``: shared arena, spinning
off, ``ORT_ENABLE_ALL``) and made by ``app.runtime.create_session`` but for bf16:

* ``cpu-1t``, ``cpu-2t``: the CPU EP, 1 and 2 intra-op threads;
* ``ov-fp32-1t``, ``ov-fp32-2t``, ``ov-bf16-1t``, ``ov-bf16-2t``: OpenVINO's CPU device, ``load_config``
  ``{"CPU": {"INFERENCE_PRECISION_HINT": "f32" | "bf16", "INFERENCE_NUM_THREADS": n, "NUM_STREAMS": "1"}}``
  (the plugin ignores the ``num_of_threads`` / ``num_streams`` options; on a CPU with AMX OpenVINO's default
  is bf16), ``session.disable_cpu_ep_fallback=1`` (the whole graph on OpenVINO, or the session fails);
  ``ov-*-2x1t``: 2 streams sharing 2 threads (a stream runs one request at a time: with one stream, concurrent
  ``session.run`` calls on a session wait for each other). fp32: the service's ``execution_provider=openvino``.

Measured, all sessions of a model alternating (the order rotated every round):

1. session creation (median of ``--creations``) and the first run after it;
2. ``session.run`` at batch 1 on a real image fitted like the service (decode, stretch fit, normalization:
   ``app.core``), asking for the outputs the endpoints read: ``--rounds`` rounds of ``--block`` runs each,
   median ms and CPU ms per run (process CPU time over the block: how many cores a run really took);
3. throughput with 2 requests at once on one session (2 Python threads, as ``LOCSVC_MAX_CONCURRENCY=2``);
4. accuracy against ``cpu-2t`` (CPU EP, fp32) over ``--images`` real images (Tiny ImageNet val, the first lines
   of ``val_annotations.txt``, for the CAM and /localize models; LSP im0801.. for pose and the person box, whose
   truth is ``export.pose.data.joints_box``): each output's max and mean absolute difference, argmax agreement,
   box IoU and joint distance (in person-box fractions) to the reference; each session's task metrics on that
   subset (top-1 among the 200 Tiny classes; top-1, GT-known and top-1 localization; PCP, PCK@0.2), with the
   images only one of the two got right.

``os.getloadavg()`` is recorded before and after each model.  Needs ``../shared/data``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from app import runtime
from app.config import REPO_MODELS, Settings
from app.core.boxes import iou
from app.core.fitting import Fit, InputSpec, fit_image
from app.core.imaging import open_image
from app.registry import read_sidecar
from app.services.localize import model_box_to_input_xyxy
from app.sidecar import Sidecar
from bench.eval_localize import paired
from export.pose.data import joints_box, read_lsp_joints
from export.pose.metrics import pck, pcp

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MODELS = tuple(f"efficientnet_lite0_{m}" for m in ("imagenet", "tiny_localize", "lsp_pose", "person_box"))
# What the endpoints read per request (cam_weight / cam_bias / pooled are read once, at load).
READ = ("features", "logits", "box", "joints", "joint_visibility")
REFERENCE = "cpu-2t"

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Variant:
    name: str
    threads: int  # in all
    precision: str | None = None  # None: CPU EP; else the OpenVINO inference precision hint
    streams: int = 1  # OpenVINO streams (infer requests run at once), sharing the threads

    @property
    def openvino(self) -> bool:
        return self.precision is not None


VARIANTS = (
    Variant("cpu-1t", 1),
    Variant("cpu-2t", 2),
    Variant("ov-fp32-1t", 1, "f32"),
    Variant("ov-fp32-2t", 2, "f32"),
    Variant("ov-bf16-1t", 1, "bf16"),
    Variant("ov-bf16-2t", 2, "bf16"),
    Variant("ov-fp32-2x1t", 2, "f32", streams=2),
    Variant("ov-bf16-2x1t", 2, "bf16", streams=2),
)


def make_session(path: Path, v: Variant) -> ort.InferenceSession:
    """The session of ``v``: the service's own (``create_session``) but for bf16, as the module doc says."""
    settings = Settings(
        execution_provider="openvino" if v.openvino else "cpu", intra_op_threads=v.threads, max_concurrency=v.streams
    )
    if v.precision in (None, "f32"):
        session = runtime.create_session(path, settings)
    else:
        so = runtime.session_options(settings)
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        cpu = {"INFERENCE_PRECISION_HINT": v.precision, "INFERENCE_NUM_THREADS": str(v.threads)}
        config = {"CPU": {**cpu, "NUM_STREAMS": str(v.streams)}}
        so.add_provider_for_devices([runtime._openvino_cpu()], {"load_config": json.dumps(config)})
        session = ort.InferenceSession(str(path), so)
    if v.openvino and session.get_providers()[0] != runtime.OPENVINO:
        raise SystemExit(f"{v.name}: OpenVINO was not given the graph (providers {session.get_providers()})")
    return session


def rotated(items: Sequence[Variant], r: int) -> list[Variant]:
    k = r % len(items)
    return [*items[k:], *items[:k]]


def fitted(data: bytes, spec: InputSpec, settings: Settings) -> tuple[F32, Fit]:
    """Bytes -> the model input of the whole image, as the service's ``prepare`` does (draft decode, fit)."""
    opened = open_image(data, max_pixels=settings.max_image_pixels)
    fraction = spec.needed_fraction(opened.width, opened.height) if settings.jpeg_draft else 1.0
    return fit_image(opened.decode(min(1.0, fraction), settings.max_decode_bytes), spec)


def run_once(session: ort.InferenceSession, names: list[str], feed: dict[str, F32]) -> dict[str, F32]:
    return dict(zip(names, session.run(names, feed), strict=True))


def creation(path: Path, variants: Sequence[Variant], n: int, feed: dict[str, F32], names: list[str]) -> dict[str, Any]:
    """Median seconds to create each session and ms of its first run, ``n`` times each, alternating."""
    create: dict[str, list[float]] = {v.name: [] for v in variants}
    first: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(n):
        for v in rotated(variants, r):
            t0 = time.perf_counter()
            s = make_session(path, v)
            t1 = time.perf_counter()
            s.run(names, feed)
            create[v.name].append(t1 - t0)
            first[v.name].append((time.perf_counter() - t1) * 1000)
            del s
    return {
        v.name: {
            "create_s": round(statistics.median(create[v.name]), 3),
            "first_run_ms": round(statistics.median(first[v.name]), 2),
        }
        for v in variants
    }


def latency(
    sessions: dict[str, ort.InferenceSession],
    variants: Sequence[Variant],
    feed: dict[str, F32],
    names: list[str],
    rounds: int,
    block: int,
) -> dict[str, Any]:
    """``session.run`` ms per variant: ``rounds`` rounds of ``block`` runs, order rotated each round."""
    for v in variants:
        for _ in range(10):
            sessions[v.name].run(names, feed)
    wall: dict[str, list[float]] = {v.name: [] for v in variants}
    cpu: dict[str, list[float]] = {v.name: [] for v in variants}
    per_round: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(rounds):
        for v in rotated(variants, r):
            s = sessions[v.name]
            times = []
            c0 = time.process_time()
            for _ in range(block):
                t0 = time.perf_counter()
                s.run(names, feed)
                times.append((time.perf_counter() - t0) * 1000)
            cpu[v.name].append((time.process_time() - c0) * 1000 / block)
            wall[v.name].extend(times)
            per_round[v.name].append(statistics.median(times))
    out: dict[str, Any] = {}
    for v in variants:
        same_threads = f"cpu-{v.threads // v.streams}t"  # the CPU EP with the threads one run gets
        ratio = [a / b for a, b in zip(per_round[v.name], per_round[same_threads], strict=True)]
        out[v.name] = {
            "runs": len(wall[v.name]),
            "ms_p50": round(statistics.median(wall[v.name]), 2),
            "ms_p90": round(float(np.percentile(wall[v.name], 90)), 2),
            "cpu_ms_per_run": round(statistics.median(cpu[v.name]), 2),
            f"ratio_to_{same_threads}": round(statistics.median(ratio), 3),
        }
    return out


def throughput(
    sessions: dict[str, ort.InferenceSession],
    variants: Sequence[Variant],
    feed: dict[str, F32],
    names: list[str],
    rounds: int,
    runs: int,
) -> dict[str, Any]:
    """Runs per second with 2 threads each making ``runs`` calls on the same session, alternating variants."""
    rates: dict[str, list[float]] = {v.name: [] for v in variants}

    def worker(s: ort.InferenceSession) -> None:
        for _ in range(runs):
            s.run(names, feed)

    for r in range(rounds):
        for v in rotated(variants, r):
            threads = [threading.Thread(target=worker, args=(sessions[v.name],)) for _ in range(2)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rates[v.name].append(2 * runs / (time.perf_counter() - t0))
    return {v.name: round(statistics.median(rates[v.name]), 1) for v in variants}


@dataclass(frozen=True)
class Sample:
    path: Path
    truth: Any  # Tiny ImageNet: (wnid, xyxy box); LSP: the image index


def images_for(sidecar: Sidecar, n: int) -> list[Sample]:
    lsp = [(DATA / "lsp_train" / "images" / f"im{i + 1:04d}.jpg", i) for i in range(800, 800 + n)]
    if sidecar.joints is not None:
        return [Sample(f, i) for f, i in lsp]
    if [lab.id for lab in sidecar.labels] == ["person"]:  # the person box: truth as /localize's, LSP's box
        xy, annotated, _ = read_lsp_joints(DATA / "lsp_train" / "joints.mat")
        return [Sample(f, ("person", joints_box(xy[i], annotated[i]))) for f, i in lsp]
    root = DATA / "tiny_imagenet_200" / "val"
    out = []
    for line in (root / "val_annotations.txt").read_text().splitlines()[:n]:
        f, wnid, x1, y1, x2, y2 = line.split("\t")
        # inclusive pixel boxes -> continuous xyxy (+1 on x2, y2), as bench.eval_cam
        out.append(Sample(root / "images" / f, (wnid, (float(x1), float(y1), float(x2) + 1, float(y2) + 1))))
    return out


def diff_stats(ref: list[F32], got: list[F32]) -> dict[str, float]:
    d = np.abs(np.stack(got).astype(np.float64) - np.stack(ref).astype(np.float64))
    return {"max_abs": float(f"{d.max():.3g}"), "mean_abs": float(f"{d.mean():.3g}")}


def accuracy(
    sessions: dict[str, ort.InferenceSession],
    variants: Sequence[Variant],
    sidecar: Sidecar,
    names: list[str],
    n: int,
    settings: Settings,
) -> dict[str, Any]:
    """Every variant's outputs over ``n`` real images, against :data:`REFERENCE`'s, and its task metrics."""
    spec = sidecar.input_spec()
    images = images_for(sidecar, n)
    outs: dict[str, dict[str, list[F32]]] = {v.name: {k: [] for k in names} for v in variants}
    fits = []
    for im in images:
        batch, fit = fitted(im.path.read_bytes(), spec, settings)
        fits.append(fit)
        for v in variants:
            for k, a in run_once(sessions[v.name], names, {"image": batch}).items():
                outs[v.name][k].append(a[0])
    ref = outs[REFERENCE]
    scores = {v.name: task_scores(outs[v.name], sidecar, images, fits) for v in variants}
    result: dict[str, Any] = {"images": len(images), "reference": REFERENCE}
    for v in variants:
        got = outs[v.name]
        row: dict[str, Any] = {k: diff_stats(ref[k], got[k]) for k in names}
        if "logits" in names:
            row["argmax_agree"] = float(
                np.mean(np.argmax(np.stack(ref["logits"]), 1) == np.argmax(np.stack(got["logits"]), 1))
            )
        if "box" in names:
            fmt = sidecar.box_format or "rchw_norm"
            a = np.stack([model_box_to_input_xyxy(b, fmt, 1, 1) for b in ref["box"]])
            b = np.stack([model_box_to_input_xyxy(b, fmt, 1, 1) for b in got["box"]])
            row["box_iou_to_reference_mean"] = round(float(np.mean(iou(a, b))), 5)
            row["box_iou_to_reference_min"] = round(float(np.min(iou(a, b))), 5)
        if "joints" in names:
            nj = len(sidecar.joints.names) if sidecar.joints else 0
            ja = np.stack(ref["joints"]).astype(np.float64).reshape(-1, nj, 2)
            jb = np.stack(got["joints"]).astype(np.float64).reshape(-1, nj, 2)
            dist = np.linalg.norm(ja - jb, axis=2)
            row["joint_dist_box_frac_mean"] = float(f"{dist.mean():.3g}")
            row["joint_dist_box_frac_max"] = float(f"{dist.max():.3g}")
        row["task"] = {key: val for key, val in scores[v.name].items() if not key.startswith("_")}
        row["paired_vs_reference"] = {
            key[1:]: paired(scores[REFERENCE][key], scores[v.name][key])
            for key in scores[v.name]
            if key.startswith("_")
        }
        result[v.name] = row
    return result


def task_scores(out: dict[str, list[F32]], sidecar: Sidecar, images: list[Sample], fits: list[Fit]) -> dict[str, Any]:
    """Task metrics of one variant; keys starting with ``_`` hold the per-image right/wrong arrays."""
    if sidecar.joints is not None:
        k = len(sidecar.joints.names)
        xy, annotated, _ = read_lsp_joints(DATA / "lsp_train" / "joints.mat")
        idx = [im.truth for im in images]
        pred = np.stack(
            [
                f.region_points_to_image(np.asarray(j, np.float64).reshape(k, 2))
                for j, f in zip(out["joints"], fits, strict=True)
            ]
        )
        return {
            "pcp_mean": round(float(pcp(pred, xy[idx], annotated[idx])["mean"]), 4),
            "pck@0.2": round(float(pck(pred, xy[idx], annotated[idx])["mean"]), 4),
        }
    index = {lab.id: lab.index for lab in sidecar.labels}
    wnids = (DATA / "tiny_imagenet_200" / "wnids.txt").read_text().split()
    logits = np.stack(out["logits"])
    truth = np.array([index[im.truth[0]] for im in images])
    if "box" not in out:  # the ImageNet CAM model: top-1 among the 200 Tiny ImageNet classes
        subset = np.array([index[w] for w in wnids])
        ok = subset[np.argmax(logits[:, subset], 1)] == truth
        return {"top1_among_200": round(float(ok.mean()), 4), "_top1_among_200": ok}
    fmt = sidecar.box_format or "rchw_norm"
    boxes = [
        f.input_boxes_to_image(model_box_to_input_xyxy(b, fmt, f.input_w, f.input_h))
        for b, f in zip(out["box"], fits, strict=True)
    ]
    ious = np.array([float(iou(b, np.array(im.truth[1]))) for b, im in zip(boxes, images, strict=True)])
    ok = np.argmax(logits, 1) == truth
    loc = ok & (ious >= 0.5)
    return {
        "top1": round(float(ok.mean()), 4),
        "mean_iou": round(float(ious.mean()), 4),
        "gt_known_loc": round(float((ious >= 0.5).mean()), 4),
        "top1_loc": round(float(loc.mean()), 4),
        "_top1": ok,
        "_gt_known_loc": ious >= 0.5,
        "_top1_loc": loc,
    }


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def measure_model(name: str, args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    sidecar = read_sidecar(args.models_dir / f"{name}.json")
    path = args.models_dir / sidecar.file
    variants = [v for v in VARIANTS if v.name in args.variants or not v.openvino]  # the CPU EP: the baselines
    load_before = load()
    probe = make_session(path, variants[0])
    names = [o.name for o in probe.get_outputs() if o.name in READ]
    del probe
    batch, _ = fitted(images_for(sidecar, 1)[0].path.read_bytes(), sidecar.input_spec(), settings)
    feed = {"image": batch}
    result: dict[str, Any] = {"input": [sidecar.input.height, sidecar.input.width], "outputs_read": names}
    result["creation"] = creation(path, variants, args.creations, feed, names)
    sessions = {v.name: make_session(path, v) for v in variants}
    result["latency"] = latency(sessions, variants, feed, names, args.rounds, args.block)
    if args.throughput_runs:
        result["throughput_c2_runs_per_s"] = throughput(sessions, variants, feed, names, 3, args.throughput_runs)
    if args.images:
        result["accuracy"] = accuracy(sessions, variants, sidecar, names, args.images, settings)
    result["loadavg"] = {"before": load_before, "after": load()}
    return result


def table(results: dict[str, Any]) -> str:
    lines = [
        "| model | variant | create s | first run ms | run ms p50 | CPU ms/run | ratio to CPU EP, same threads | c=2 runs/s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model, res in results.items():
        for v, lat in res["latency"].items():
            ratio = next(val for key, val in lat.items() if key.startswith("ratio_to_"))
            thr = res.get("throughput_c2_runs_per_s", {}).get(v, "")
            c = res["creation"][v]
            lines.append(
                f"| {model} | {v} | {c['create_s']} | {c['first_run_ms']} | {lat['ms_p50']} | "
                f"{lat['cpu_ms_per_run']} | {ratio} | {thr} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--models-dir", type=Path, default=REPO_MODELS)
    ap.add_argument("--variants", nargs="+", default=[v.name for v in VARIANTS], choices=[v.name for v in VARIANTS])
    ap.add_argument("--rounds", type=int, default=20, help="latency rounds (all variants once each per round)")
    ap.add_argument("--block", type=int, default=5, help="runs per variant per round")
    ap.add_argument("--creations", type=int, default=3, help="sessions created per variant, for the creation time")
    ap.add_argument("--throughput-runs", type=int, default=60, help="runs per thread at c=2 (0: skip)")
    ap.add_argument("--images", type=int, default=200, help="real images for the accuracy (0: skip)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    head: dict[str, Any] = {"onnxruntime": ort.__version__, "cpus": os.cpu_count()}
    if any(v.openvino for v in VARIANTS if v.name in args.variants):
        try:
            runtime.check_provider(Settings(execution_provider="openvino"))
            meta = runtime._openvino_cpu().ep_metadata
        except runtime.ProviderError as e:
            raise SystemExit(str(e)) from e
        head |= {"openvino_ep": meta.get("version"), "cpu": meta.get("FULL_DEVICE_NAME")}
    settings = Settings()
    runtime.limit_blas_threads(settings.blas_threads)
    results: dict[str, Any] = {}
    for name in args.models:
        results[name] = measure_model(name, args, settings)
        print(json.dumps({name: results[name]["latency"], "loadavg": results[name]["loadavg"]}), flush=True)
    if args.json:
        args.json.write_text(json.dumps({**head, "results": results}, indent=2))
    print(table(results))
    for name, res in results.items():
        if "accuracy" in res:
            print(name, json.dumps(res["accuracy"], indent=1))


if __name__ == "__main__":
    main()
