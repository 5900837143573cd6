"""The bundled models on real photos that ship in a package (scikit-image)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from app.config import Settings
from app.core.boxes import iou
from app.factory import create_app
from tests.conftest import encode, files

pytestmark = pytest.mark.anyio

# Hand-drawn box around the cat in skimage.data.chelsea() (451 x 300): head and body, xyxy.
CHELSEA_CAT = (30.0, 0.0, 420.0, 300.0)
CAT_WNIDS = {
    "n02123045",
    "n02123159",
    "n02123394",
    "n02123597",
    "n02124075",
}  # tabby, tiger, Persian, Siamese, Egyptian


@pytest.fixture
async def real_client(real_models_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(models_dir=real_models_dir, models=["efficientnet_lite0_imagenet"], auth=False))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c,
    ):
        yield c


async def test_cat_is_found_and_boxed(real_client: httpx.AsyncClient, cat_jpeg: bytes) -> None:
    r = await real_client.post("/cam", files=files(cat_jpeg), params={"top_k": 5})
    assert r.status_code == 200, r.text
    classes = r.json()["classes"]
    assert classes[0]["id"] in CAT_WNIDS, [c["name"] for c in classes]
    top = classes[0]
    b = top["box"]
    assert iou([b["x1"], b["y1"], b["x2"], b["y2"]], CHELSEA_CAT) >= 0.5
    px, py = top["peak"]
    assert CHELSEA_CAT[0] <= px <= CHELSEA_CAT[2] and CHELSEA_CAT[1] <= py <= CHELSEA_CAT[3]


async def test_where_is_the_cat_by_label(real_client: httpx.AsyncClient, cat_jpeg: bytes) -> None:
    r = await real_client.post("/cam", files=files(cat_jpeg), params={"label": "Egyptian cat"})
    [only] = r.json()["classes"]
    assert only["id"] == "n02124075"
    r2 = await real_client.post("/cam", files=files(cat_jpeg), params={"label": "n02124075"})
    assert r2.json()["classes"][0]["box"] == only["box"]


async def test_rotated_upload_gives_rotated_box(real_client: httpx.AsyncClient, cat_jpeg: bytes) -> None:
    """A picture stored sideways with EXIF orientation 6 is localized in its upright frame."""
    from io import BytesIO

    upright = Image.open(BytesIO(cat_jpeg))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera writes, to be rotated back by 270
    exif = Image.Exif()
    exif[0x0112] = 6
    r = await real_client.post(
        "/cam", files=files(encode(stored, "JPEG", exif=exif, quality=95)), params={"label": "Egyptian cat"}
    )
    body = r.json()
    assert (body["image"]["width"], body["image"]["height"]) == upright.size
    b = body["classes"][0]["box"]
    assert iou([b["x1"], b["y1"], b["x2"], b["y2"]], CHELSEA_CAT) >= 0.5


async def test_large_photo_same_answer(real_client: httpx.AsyncClient) -> None:
    """A 4x bigger copy (JPEG draft decoding kicks in) gives the same class and a proportional box."""
    skd = pytest.importorskip("skimage.data")
    img = Image.fromarray(skd.chelsea())
    small = (await real_client.post("/cam", files=files(encode(img, quality=95)), params={"top_k": 1})).json()
    big_img = img.resize((img.width * 4, img.height * 4), Image.Resampling.BICUBIC)
    big = (await real_client.post("/cam", files=files(encode(big_img, quality=95)), params={"top_k": 1})).json()
    assert big["classes"][0]["id"] == small["classes"][0]["id"]
    sb, bb = small["classes"][0]["box"]["normalized"], big["classes"][0]["box"]["normalized"]
    np.testing.assert_allclose(
        [bb["x1"], bb["y1"], bb["x2"], bb["y2"]], [sb["x1"], sb["y1"], sb["x2"], sb["y2"]], atol=0.05
    )
