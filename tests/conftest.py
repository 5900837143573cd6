"""Shared fixtures: tiny seeded ONNX models, an app with its lifespan running, generated images."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from app.config import REPO_MODELS, Settings
from app.factory import create_app
from tests.tiny_models import build

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("models")
    build("cam", d / "tiny_cam.onnx", seed=1)
    build("localize", d / "tiny_localize.onnx", seed=2)
    build("pose", d / "tiny_pose.onnx", seed=3)
    return d


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


AppClient = Callable[..., Any]


@pytest.fixture
async def make_client(tiny_models_dir: Path) -> AsyncIterator[Callable[..., Any]]:
    """``async with make_client(**settings) as client``: an httpx client on an app whose lifespan runs."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = Settings(
            **{"models_dir": tiny_models_dir, "log_json": True, "auth": "api_key" in overrides, **overrides}
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield client

    yield factory


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client() as c:
        yield c


@pytest.fixture(scope="session")
def real_models_dir() -> Path:
    if not any(REPO_MODELS.glob("*.json")):
        pytest.skip("no bundled models in models/")
    return REPO_MODELS


def encode(img: Image.Image, fmt: str = "JPEG", **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def noise_image(w: int, h: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)


@pytest.fixture
def jpeg() -> bytes:
    return encode(noise_image(64, 48))


@pytest.fixture(scope="session")
def cat_jpeg() -> bytes:
    skd = pytest.importorskip("skimage.data")
    return encode(Image.fromarray(skd.chelsea()), quality=95)


def files(data: bytes, name: str = "upload.jpg", ctype: str = "image/jpeg") -> dict[str, tuple[str, bytes, str]]:
    return {"image": (name, data, ctype)}


@pytest.fixture
def shared_data() -> Iterator[Path]:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"datasets not found at {SHARED_DATA} (../shared/data beside the checkout)")
    yield SHARED_DATA
