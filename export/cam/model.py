"""The classifiers ``cam`` exports: EfficientNet-Lite0/1 with named ``features``/``fc``, or a user's factory."""

from __future__ import annotations

import importlib

import numpy as np
import torch
from torch import nn

from export.common.efficientnet_lite import EfficientNetLite


class _LiteFeatures(nn.Module):
    """Expose ``EfficientNetLite.features`` as a named submodule so the generic wrapper can hook it."""

    def __init__(self, net: EfficientNetLite) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


class LiteClassifier(nn.Module):
    """EfficientNet-Lite0/1 as ``features -> GAP -> fc`` with named submodules ``features`` and ``fc``."""

    def __init__(self, net: EfficientNetLite) -> None:
        super().__init__()
        self.features = _LiteFeatures(net)
        self.fc = net._fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(self.features(x).mean(dim=(2, 3)))
        return out


def sample_images(size: int, n: int = 4, seed: int = 0) -> torch.Tensor:
    """Real photos (scikit-image's bundled samples) normalized as the model expects, plus noise."""
    from PIL import Image

    imgs: list[np.ndarray] = []
    try:
        import skimage.data as skd

        for name in ("chelsea", "astronaut", "coffee", "rocket")[:n]:
            im = Image.fromarray(getattr(skd, name)()).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            imgs.append(np.asarray(im, dtype=np.float32) / 255.0)
    except ImportError:
        pass
    rng = np.random.default_rng(seed)
    while len(imgs) < n:
        imgs.append(rng.random((size, size, 3), dtype=np.float32))
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
    return (x - 0.5) / 0.5


def load_user_model(spec: str) -> nn.Module:
    """``package.module:factory`` -> the module returned by calling ``factory()``, in eval mode."""
    mod_name, _, attr = spec.partition(":")
    if not attr:
        raise SystemExit(f"--model must look like package.module:factory, got {spec!r}")
    factory = getattr(importlib.import_module(mod_name), attr)
    model = factory()
    if not isinstance(model, nn.Module):
        raise SystemExit(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval()
