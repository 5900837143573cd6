# mypy: disallow-untyped-decorators=False
"""The pipeline of :mod:`bench.peers.naive` as a BentoML service, run from ``.venv-bento``:

    BENTOML_DO_NOT_TRACK=true .venv-bento/bin/bentoml serve bench.peers.bento_naive:Svc --port 3000

``PEER_BENTO_THREADS`` unset: BentoML's defaults (``@bentoml.service`` with no arguments: one worker, its
default threads).  Set (e.g. 4): the tuned one, ``threads=N`` (onnxruntime stays on one thread per request).
"""

import os
from pathlib import Path
from typing import Any

import bentoml

from bench.peers.naive import cam_top1, load_models, localize, pose

THREADS = os.environ.get("PEER_BENTO_THREADS")
CONFIG: dict[str, Any] = {"threads": int(THREADS), "traffic": {"timeout": 60}} if THREADS else {}


@bentoml.service(**CONFIG)
class Svc:
    def __init__(self) -> None:
        self.cam_model, self.loc_model, self.pose_model = load_models()

    @bentoml.api(route="/cam")
    def cam(self, image: Path) -> dict[str, Any]:
        return {"classes": [cam_top1(self.cam_model, image.read_bytes())]}

    @bentoml.api(route="/localize")
    def localize(self, image: Path) -> dict[str, Any]:
        return localize(self.loc_model, image.read_bytes())

    @bentoml.api(route="/pose")
    def pose(self, image: Path) -> dict[str, Any]:
        return pose(self.pose_model, image.read_bytes())
