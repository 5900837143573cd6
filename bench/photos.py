"""The benchmarks' test images: JPEGs made by Pillow from real photos, and the draft decode of one.

* :func:`photo_jpeg`: scikit-image's ``chelsea`` cat or ``astronaut`` resized, as JPEG (``small`` 640x480,
  ``large`` 4000x3000: 0.8 MB, smooth);
* :func:`phone_jpeg`: the same upscaled to 12 MP with sensor-like noise (``phone``: 3-5 MB, a phone photo's size);
* :func:`draft_decode_ms`: Pillow's draft decode of a file alone (D of the 12 MP rule of ``bench.perf --peers``).
"""

from __future__ import annotations

import io
import statistics
import time

import numpy as np
from PIL import Image

IMAGES = {"small": (640, 480), "large": (4000, 3000), "phone": (4000, 3000)}
TWELVE_MP = ("large", "phone")
ENDPOINT_PHOTO = {"/pose": "astronaut"}  # a person for /pose; the cat elsewhere


def photo_jpeg(width: int, height: int, photo: str = "chelsea", quality: int = 90) -> bytes:
    """A real photo (scikit-image's ``chelsea`` cat or ``astronaut``) resized with Pillow, as JPEG."""
    import skimage.data as skd

    img = Image.fromarray(getattr(skd, photo)()).resize((width, height), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def phone_jpeg(width: int, height: int, photo: str = "chelsea", quality: int = 92, sigma: float = 8.0) -> bytes:
    """A 12 MP JPEG of a phone photo's size (3-5 MB): the real photo upscaled, with sensor-like noise (Gaussian,
    ``sigma`` levels, fixed seed) so that it carries a phone photo's entropy-coded data, at ``quality``."""
    import skimage.data as skd

    img = Image.fromarray(getattr(skd, photo)()).resize((width, height), Image.Resampling.BICUBIC)
    noise = np.random.default_rng(0).normal(0.0, sigma, (height, width, 3)).astype(np.float32)
    arr = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def bench_image(name: str, photo: str) -> bytes:
    """The JPEG named ``name`` in :data:`IMAGES` (``phone``: :func:`phone_jpeg`), of ``photo``."""
    return phone_jpeg(*IMAGES[name], photo=photo) if name == "phone" else photo_jpeg(*IMAGES[name], photo=photo)


def draft_decode_ms(data: bytes, size: tuple[int, int], n: int = 15) -> float:
    """Median ms of Pillow's draft decode of ``data`` alone, to at least ``size`` (w, h): open, ``draft`` (the
    smallest DCT scale that keeps ``size``), load."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", size)
            im.load()
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)
