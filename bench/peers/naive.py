"""The pipeline a user writes in an afternoon around the bundled models: no service code, plain Pillow and numpy.

Sizes and normalization are read from each model's sidecar JSON; the models from ``PEER_CAM_MODEL``,
``PEER_LOCALIZE_MODEL``, ``PEER_POSE_MODEL`` (defaults: the fp32 ones).  Like the service, /pose finds the person
first when the pose sidecar names a person finder (one look, then the crop).
"""

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

MODELS = Path(os.environ.get("PEER_MODELS_DIR", Path(__file__).resolve().parents[2] / "models"))


class Model:
    weight: Any = None  # the CAM model's dense layer
    finder: "Model | None" = None  # the pose model's person finder (its sidecar's person_model)

    def __init__(self, name: str) -> None:
        self.meta = json.loads((MODELS / f"{name}.json").read_text())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.sess = ort.InferenceSession(str(MODELS / f"{name}.onnx"), opts, providers=["CPUExecutionProvider"])
        self.labels = [lab["name"] for lab in self.meta.get("labels", [])]

    def prepare(self, data: bytes) -> tuple[Image.Image, Any]:
        img = Image.open(io.BytesIO(data)).convert("RGB")
        return img, self.tensor(img)

    def tensor(self, img: Image.Image) -> Any:
        size = (self.meta["input"]["width"], self.meta["input"]["height"])
        norm = self.meta["normalization"]
        x = np.asarray(img.resize(size, Image.Resampling.BILINEAR), dtype=np.float32) * norm["scale"]
        x = (x - np.array(norm["mean"], dtype=np.float32)) / np.array(norm["std"], dtype=np.float32)
        return x.transpose(2, 0, 1)[None]

    def run(self, x: Any, outputs: list[str]) -> list[Any]:
        return self.sess.run(outputs, {self.sess.get_inputs()[0].name: x})  # type: ignore[no-any-return]


def load_models() -> tuple[Model, Model, Model]:
    cam = Model(os.environ.get("PEER_CAM_MODEL", "efficientnet_lite0_imagenet"))
    size = (cam.meta["input"]["height"], cam.meta["input"]["width"])
    # the dense layer of the CAM model, once
    cam.weight = cam.run(np.zeros((1, 3, *size), np.float32), ["cam_weight"])[0]
    loc = Model(os.environ.get("PEER_LOCALIZE_MODEL", "efficientnet_lite0_tiny_localize"))
    pose = Model(os.environ.get("PEER_POSE_MODEL", "efficientnet_lite0_lsp_pose"))
    if pose.meta.get("person_model"):
        pose.finder = Model(pose.meta["person_model"])
    return cam, loc, pose


def cam_top1(model: Model, data: bytes) -> dict[str, Any]:
    img, x = model.prepare(data)
    features, logits = model.run(x, ["features", "logits"])
    y = int(np.argmax(logits[0]))
    k, h, w = features.shape[1:]
    m = (model.weight[y] @ features[0].reshape(k, h * w)).reshape(h, w)
    heat = np.asarray(Image.fromarray(m.astype(np.float32), mode="F").resize(img.size, Image.Resampling.BILINEAR))
    ys, xs = np.nonzero(heat >= 0.2 * heat.max())
    p = np.exp(logits[0] - logits[0].max())
    return {
        "class": y,
        "label": model.labels[y],
        "score": float(p[y] / p.sum()),
        "box": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
    }


def localize(model: Model, data: bytes) -> dict[str, Any]:
    img, x = model.prepare(data)
    logits, box = model.run(x, ["logits", "box"])
    y = int(np.argmax(logits[0]))
    r, c, h, w = box[0].tolist()  # fractions of the image: row, column, height, width
    width, height = img.size
    return {"class": y, "label": model.labels[y], "box": [c * width, r * height, (c + w) * width, (r + h) * height]}


def pose(model: Model, data: bytes) -> dict[str, Any]:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    x0, y0 = 0, 0
    if model.finder is not None:  # the person's box first, then the joints on that crop
        (box,) = model.finder.run(model.finder.tensor(img), ["box"])
        r, c, h, w = box[0].tolist()
        x0, y0 = int(c * img.width), int(r * img.height)
        x1, y1 = max(x0 + 1, int((c + w) * img.width)), max(y0 + 1, int((r + h) * img.height))
        img = img.crop((x0, y0, x1, y1))
    (joints,) = model.run(model.tensor(img), ["joints"])
    width, height = img.size
    names = model.meta["joints"]["names"]
    xy = joints[0].reshape(-1, 2)
    return {
        "joints": [
            {"name": n, "x": float(x0 + a * width), "y": float(y0 + b * height)}
            for n, (a, b) in zip(names, xy, strict=True)
        ]
    }
