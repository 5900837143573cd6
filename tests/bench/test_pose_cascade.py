"""bench.pose_cascade: its variants are the service's own run_pose with the sidecar's framing kept or dropped."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.config import Settings
from app.registry import Registry
from app.services.common import Deadline
from app.services.pose import PoseParams, run_pose
from app.tasks import POSE
from bench.pose_cascade import run_variant, variant
from tests.conftest import encode, noise_image
from tests.tiny_models import EDGES, JOINT_NAMES, build


def test_a_variant_without_framing_answers_as_a_pose_model_that_has_none(tmp_path: Path) -> None:
    build("localize", tmp_path / "finder.onnx", classes=1, seed=5)
    framing = {"span": [0.55, 0.76], "min_side_ratio": 0.25}
    joints = {"names": JOINT_NAMES, "edges": EDGES, "framing": framing}
    build("pose", tmp_path / "framed.onnx", seed=3, edit={"person_model": "finder", "joints": joints})
    build("pose", tmp_path / "plain.onnx", seed=3, edit={"person_model": "finder"})
    settings = Settings(models_dir=tmp_path, jpeg_draft=False)
    registry = Registry.load(settings)
    framed, plain = registry.get(POSE, "framed"), registry.get(POSE, "plain")
    img = encode(noise_image(160, 120, seed=4))
    scenes = [img]

    dropped = variant(framed, framed=False)
    assert dropped.joints.framing is None and framed.joints.framing is not None  # the loaded model is untouched
    want = run_pose(plain, img, PoseParams(), settings, Deadline.start(5)).response
    assert np.allclose(run_variant(dropped, scenes, settings)[0], [[j.x, j.y] for j in want.joints])
    kept = run_variant(variant(framed, framed=True), scenes, settings)[0]
    assert not np.allclose(kept, [[j.x, j.y] for j in want.joints])
