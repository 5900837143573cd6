"""What each ``/cam`` method costs: ms per request through the service's own job (decode, inference, the method's
maps, boxes; top_k=1), for every CAM model in a models folder, median and minimum of ``--runs`` runs.

    python -m bench.cam_methods --models-dir models --runs 7

The image is scikit-image's cat photo at 640x480 (JPEG). Run it on an idle machine: the figures are wall times.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from app.config import REPO_MODELS, Settings
from app.registry import Registry
from app.services.cam import CamParams, run_cam
from app.services.common import Deadline
from app.tasks import CAM
from bench.photos import photo_jpeg


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--models-dir", type=Path, default=REPO_MODELS)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    args = ap.parse_args(argv)
    settings = Settings(models_dir=args.models_dir, auth=False, intra_op_threads=args.threads)
    registry = Registry.load(settings)
    image = photo_jpeg(640, 480)
    for name in sorted(registry.models):
        model = CAM.view(registry.models[name])
        if model is None:
            continue
        for method in model.methods:
            params = CamParams(top_k=1, method=method)
            run_cam(model, image, params, settings, Deadline.start(60))  # warm-up
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                out = run_cam(model, image, params, settings, Deadline.start(60))
                times.append((time.perf_counter() - t0) * 1000)
            masks = f"  masks {out.response.masks}/{out.response.masks_total}" if out.response.masks else ""
            print(f"{name:36s} {method.value:12s} {statistics.median(times):8.1f} ms (min {min(times):.1f}){masks}")


if __name__ == "__main__":
    main()
