"""A corpus of bad (and odd but valid) uploads and parameters, generated here, sent to every endpoint.

Each case asserts the status, the problem body (RFC 9457, naming the field), and that the next good
request still succeeds: nothing is lost, nothing dies.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import encode, noise_image

pytestmark = pytest.mark.anyio
ENDPOINTS = ("/cam", "/localize", "/pose")


def _png_bomb(side: int = 30000) -> bytes:
    """A valid PNG header claiming side x side pixels, with a tiny compressed body."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * side
    idat = zlib.compress(row * 64, 9)  # truncated data: the header alone must be enough to refuse it
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _animated_gif() -> bytes:
    frames = [noise_image(24, 24, seed=s).convert("P") for s in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50)
    return buf.getvalue()


def _sixteen_bit_png() -> bytes:
    return encode(Image.fromarray((np.arange(40 * 30).reshape(30, 40) * 50).astype(np.uint16)), "PNG")


BAD: dict[str, tuple[bytes, int, str]] = {
    "text": (b"just some text, not a picture", 415, "image"),
    "pdf": (b"%PDF-1.7\n1 0 obj <<>> endobj\n", 415, "image"),
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', 415, "image"),
    "zip": (b"PK\x03\x04" + b"\x00" * 40, 415, "image"),
    "empty": (b"", 422, "image"),
    "truncated_jpeg": (encode(noise_image(300, 200))[:1500], 422, "image"),
    "corrupt_png": (b"\x89PNG\r\n\x1a\n" + b"\xde\xad\xbe\xef" * 50, 422, "image"),
    "jpeg_magic_only": (b"\xff\xd8\xff\xe0" + b"\x00" * 10, 422, "image"),
    "bomb": (_png_bomb(), 413, "image"),
}

ODD_BUT_VALID: dict[str, bytes] = {
    "1x1": encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
    "1x500": encode(noise_image(1, 500), "PNG"),
    "grey": encode(noise_image(50, 40).convert("L"), "JPEG"),
    "cmyk": encode(noise_image(50, 40).convert("CMYK"), "JPEG"),
    "palette": encode(noise_image(50, 40).convert("P"), "PNG"),
    "rgba": encode(noise_image(50, 40).convert("RGBA"), "PNG"),
    "16bit": _sixteen_bit_png(),
    "animated_gif": _animated_gif(),
    "webp": encode(noise_image(50, 40), "WEBP"),
    "bmp": encode(noise_image(50, 40), "BMP"),
    "tiff": encode(noise_image(50, 40), "TIFF"),
}


def _problem(r: httpx.Response, status: int, field: str | None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"].startswith("https://")
    assert "Traceback" not in r.text and "/work/" not in r.text and ".py" not in body["detail"]
    if field is not None:
        assert body["field"] == field, body
    return body


async def _still_works(client: httpx.AsyncClient, path: str) -> None:
    r = await client.post(path, files={"image": ("ok.jpg", encode(noise_image(40, 30)), "image/jpeg")})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("case", sorted(BAD))
async def test_bad_upload(client: httpx.AsyncClient, path: str, case: str) -> None:
    data, status, field = BAD[case]
    # the declared type lies on purpose: the format is sniffed from the bytes
    r = await client.post(path, files={"image": ("photo.jpg", data, "image/jpeg")})
    _problem(r, status, field)
    await _still_works(client, path)


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("case", sorted(ODD_BUT_VALID))
async def test_odd_but_valid_upload(client: httpx.AsyncClient, path: str, case: str) -> None:
    r = await client.post(path, files={"image": ("x.bin", ODD_BUT_VALID[case], "application/octet-stream")})
    assert r.status_code == 200, r.text


REQUEST_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("/cam", {"top_k": 0}, "top_k"),
    ("/cam", {"top_k": 1000}, "top_k"),
    ("/cam", {"top_k": "many"}, "top_k"),
    ("/cam", {"class_id": -1}, "class_id"),
    ("/cam", {"class_id": 4}, "class_id"),
    ("/cam", {"label": "unicorn"}, "label"),
    ("/cam", {"label": "class 1", "class_id": 1}, "label"),
    ("/cam", {"threshold": 1.5}, "threshold"),
    ("/cam", {"threshold": "nan"}, "threshold"),
    ("/cam", {"norm": "zscore"}, "norm"),
    ("/cam", {"format": "gif"}, "format"),
    ("/localize", {"top_k": -3}, "top_k"),
    ("/pose", {"box": "0,0,0,0"}, "box"),
    ("/pose", {"box": "10,10,5,5"}, "box"),
    ("/pose", {"box": "0,0,41,30"}, "box"),
    ("/pose", {"box": "-1,-1,10,10"}, "box"),
    ("/pose", {"box": "20,20,-5,-5", "box_format": "rchw"}, "box"),
    ("/pose", {"box": "1,2"}, "box"),
    ("/pose", {"box_format": "polar"}, "box_format"),
]


@pytest.mark.parametrize(("path", "params", "field"), REQUEST_CASES)
async def test_bad_parameter_names_the_field(
    client: httpx.AsyncClient, path: str, params: dict[str, Any], field: str
) -> None:
    r = await client.post(path, params=params, files={"image": ("a.jpg", encode(noise_image(40, 30)), "image/jpeg")})
    _problem(r, 422, field)
    await _still_works(client, path)


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_missing_or_misnamed_field(client: httpx.AsyncClient, path: str, jpeg: bytes) -> None:
    body = _problem(await client.post(path, files={"file": ("a.jpg", jpeg, "image/jpeg")}), 422, "image")
    assert "multipart/form-data" in body["detail"]
    _problem(await client.post(path), 422, "image")
    _problem(await client.post(path, data={"image": "not a file"}), 422, "image")
    # a body that is neither a form nor declared as an image: 415, saying what is accepted
    for ctype in ("application/json", "text/plain"):
        body = _problem(await client.post(path, content=jpeg, headers={"Content-Type": ctype}), 415, "image")
        assert ctype in body["detail"] and "image/*" in body["detail"]
    await _still_works(client, path)


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_raw_body_upload(client: httpx.AsyncClient, path: str, jpeg: bytes) -> None:
    """The raw body (TorchServe's ``curl -T``) is the same request as the multipart field."""
    multipart = await client.post(path, files={"image": ("a.jpg", jpeg, "image/jpeg")})
    assert multipart.status_code == 200, multipart.text
    for ctype in ("image/jpeg", "image/png", "application/octet-stream", "image/jpeg; charset=binary"):
        raw = await client.post(path, content=jpeg, headers={"Content-Type": ctype})
        assert raw.status_code == 200, raw.text
        a, b = raw.json(), multipart.json()
        a.pop("timings"), b.pop("timings")
        assert a == b
    no_type = client.build_request("POST", path, content=jpeg)  # no Content-Type, as curl -T sends it
    assert "content-type" not in no_type.headers
    raw = await client.send(no_type)
    assert raw.status_code == 200 and raw.json()["image"] == multipart.json()["image"], raw.text
    # the declared type is not trusted either way: the bytes are sniffed
    _problem(await client.post(path, content=b"just some text", headers={"Content-Type": "image/jpeg"}), 415, "image")
    _problem(await client.post(path, content=b"", headers={"Content-Type": "image/jpeg"}), 422, "image")


async def test_raw_body_over_the_limit_is_413(make_client: Callable[..., Any], jpeg: bytes) -> None:
    async with make_client(max_upload_bytes=len(jpeg) - 1) as c:
        _problem(await c.post("/localize", content=jpeg, headers={"Content-Type": "image/jpeg"}), 413, None)

        async def chunks() -> Any:  # no Content-Length: refused while streaming
            yield jpeg[:100]
            yield jpeg[100:]

        _problem(await c.post("/localize", content=chunks(), headers={"Content-Type": "image/jpeg"}), 413, None)


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    _problem(await client.get("/nope"), 404, None)
    _problem(await client.get("/cam"), 405, None)


@pytest.mark.parametrize("mk", [lambda: encode(noise_image(40, 30)), lambda: encode(noise_image(30, 40), "PNG")])
async def test_many_bad_then_good(make_client: Callable[..., Any], mk: Callable[[], bytes]) -> None:
    """A burst of garbage does not wedge the limiter: slots and queue are released every time."""
    async with make_client(max_concurrency=1, max_queue=0) as c:
        for _ in range(20):
            assert (await c.post("/cam", files={"image": ("a", b"junk", "image/jpeg")})).status_code == 415
        assert (await c.post("/cam", files={"image": ("a.jpg", mk(), "image/jpeg")})).status_code == 200
