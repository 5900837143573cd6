"""Every endpoint through the app with its lifespan running, on tiny seeded ONNX models."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import encode, files, noise_image

pytestmark = pytest.mark.anyio


async def test_health_ready_models(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = (await client.get("/readyz")).json()
    assert ready["status"] == "ready" and set(ready["models"]) == {"tiny_cam", "tiny_localize", "tiny_pose"}
    models = {m["name"]: m for m in (await client.get("/models")).json()}
    assert sorted(models["tiny_localize"]["serves"]) == ["/cam", "/localize"]
    assert models["tiny_pose"]["serves"] == ["/pose"]
    full = (await client.get("/models/tiny_cam")).json()
    assert full["labels"][1] == {"index": 1, "id": "n00000001", "name": "class 1", "aliases": "class 1, thing1"}
    assert (await client.get("/models/nope")).status_code == 404


async def test_cam_top_k(client: httpx.AsyncClient, jpeg: bytes) -> None:
    r = await client.post("/cam", files=files(jpeg), params={"top_k": 3, "include_grid": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "tiny_cam" and body["grid_size"] == [4, 4]
    probs = [c["probability"] for c in body["classes"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True)
    for c in body["classes"]:
        assert c["cam_score"] == pytest.approx(c["logit"], abs=1e-4)  # the CAM identity, end to end
        b = c["box"]
        assert 0 <= b["x1"] < b["x2"] <= 64 and 0 <= b["y1"] < b["y2"] <= 48
        assert (b["r"], b["c"], b["h"], b["w"]) == (b["y1"], b["x1"], b["y2"] - b["y1"], b["x2"] - b["x1"])
        assert b["normalized"]["x2"] == pytest.approx(b["x2"] / 64)
        assert np.asarray(c["grid"]).shape == (4, 4)


@pytest.mark.parametrize(
    ("params", "index"),
    [({"class_id": 2}, 2), ({"label": "n00000003"}, 3), ({"label": "Class 1"}, 1), ({"label": "thing0"}, 0)],
)
async def test_cam_for_one_class(client: httpx.AsyncClient, jpeg: bytes, params: dict[str, Any], index: int) -> None:
    r = await client.post("/cam", files=files(jpeg), params=params)
    assert r.status_code == 200, r.text
    assert [c["index"] for c in r.json()["classes"]] == [index]


async def test_cam_overlay_png(client: httpx.AsyncClient, jpeg: bytes) -> None:
    r = await client.post("/cam", files=files(jpeg), params={"format": "png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (64, 48)
    r = await client.post("/cam", files=files(jpeg), params={"overlay": True})
    png = base64.b64decode(r.json()["overlay_png"])
    assert png.startswith(b"\x89PNG")


async def test_cam_threshold_shrinks_box(client: httpx.AsyncClient) -> None:
    data = encode(noise_image(300, 200, seed=5), "PNG")
    boxes = []
    for t in (0.0, 0.2, 0.6, 0.95):
        r = await client.post("/cam", files=files(data, "a.png", "image/png"), params={"class_id": 0, "threshold": t})
        boxes.append(r.json()["classes"][0]["box"])
    areas = [b["w"] * b["h"] for b in boxes]
    assert areas == sorted(areas, reverse=True) and areas[0] == 300 * 200


async def test_localize(client: httpx.AsyncClient) -> None:
    data = encode(noise_image(200, 100, seed=3))
    r = await client.post("/localize", files=files(data), params={"top_k": 2, "overlay": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] == body["top_k"][0] and len(body["top_k"]) == 2
    b = body["box"]
    assert 0 <= b["x1"] < b["x2"] <= 200 and 0 <= b["y1"] < b["y2"] <= 100
    assert b["normalized"]["w"] == pytest.approx(b["w"] / 200)
    assert base64.b64decode(body["overlay_png"]).startswith(b"\x89PNG")


async def test_localize_box_matches_model_output(client: httpx.AsyncClient, tiny_models_dir: Any) -> None:
    """The box in pixels is the model's (r, c, h, w) fractions times the image size."""
    import onnxruntime as ort

    from app.core.fitting import InputSpec, fit_image
    from app.core.imaging import decode_image

    data = encode(noise_image(120, 80, seed=9), "PNG")
    d = decode_image(data, max_pixels=10**8, max_bytes=10**10)
    batch, _ = fit_image(d, InputSpec(32, 32))
    sess = ort.InferenceSession(str(tiny_models_dir / "tiny_localize.onnx"))
    r, c, h, w = sess.run(["box"], {"image": batch})[0][0]
    body = (await client.post("/localize", files=files(data, "a.png", "image/png"))).json()
    box = body["box"]
    assert box["x1"] == pytest.approx(c * 120, rel=1e-4) and box["y1"] == pytest.approx(r * 80, rel=1e-4)
    assert box["x2"] == pytest.approx(min(120, (c + w) * 120), rel=1e-4)
    assert box["y2"] == pytest.approx(min(80, (r + h) * 80), rel=1e-4)


async def test_pose_whole_image_and_box(client: httpx.AsyncClient) -> None:
    data = encode(noise_image(150, 300, seed=4))
    r = await client.post("/pose", files=files(data))
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["joints"]) == 14 and body["joints"][13]["name"] == "head_top"
    assert body["person_box"]["w"] == 150 and body["person_box"]["h"] == 300
    for j in body["joints"]:
        assert j["x"] == pytest.approx(j["x_norm"] * 150) and j["y"] == pytest.approx(j["y_norm"] * 300)
        assert 0 <= j["visibility"] <= 1
    assert body["edges"][0] == {"a": 0, "b": 1, "names": ["r_ankle", "r_knee"]}

    for fmt, box in (("xyxy", "10,20,110,220"), ("rchw", "20,10,200,100")):
        r = await client.post("/pose", files=files(data), params={"box": box, "box_format": fmt})
        body = r.json()
        pb = body["person_box"]
        assert (pb["x1"], pb["y1"], pb["x2"], pb["y2"]) == (10, 20, 110, 220)
        for j in body["joints"]:
            assert j["x"] == pytest.approx(10 + j["x_norm"] * 100) and j["y"] == pytest.approx(20 + j["y_norm"] * 200)
    r = await client.post("/pose", files=files(data), params={"format": "png"})
    assert r.headers["content-type"] == "image/png"


@pytest.mark.parametrize(
    "box", ["0,0,0,10", "10,10,5,20", "-5,0,10,10", "0,0,151,10", "1,2,3", "a,b,c,d", "nan,0,10,10", "0,0,1e400,5"]
)
async def test_pose_bad_box_is_422_naming_box(client: httpx.AsyncClient, jpeg: bytes, box: str) -> None:
    data = encode(noise_image(150, 300))
    r = await client.post("/pose", files=files(data), params={"box": box})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "box"
    assert (await client.post("/pose", files=files(data))).status_code == 200


async def test_model_choice(client: httpx.AsyncClient, jpeg: bytes) -> None:
    r = await client.post("/cam", files=files(jpeg), params={"model": "tiny_localize"})
    assert r.status_code == 200 and r.json()["model"] == "tiny_localize"
    r = await client.post("/cam", files=files(jpeg), params={"model": "tiny_pose"})
    assert r.status_code == 422 and r.json()["field"] == "model"
    r = await client.post("/localize", files=files(jpeg), params={"model": "missing"})
    assert r.status_code == 404 and r.json()["field"] == "model"


async def test_request_id_round_trip(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert r.headers["x-request-id"] != "bad id with spaces" and len(r.headers["x-request-id"]) == 16


async def test_metrics_count_requests(client: httpx.AsyncClient, jpeg: bytes) -> None:
    await client.post("/cam", files=files(jpeg))
    await client.post("/cam", files=files(b"nope"))
    text = (await client.get("/metrics")).text
    assert 'locsvc_http_requests_total{method="POST",route="/cam",status="200"} 1.0' in text
    assert 'locsvc_http_requests_total{method="POST",route="/cam",status="415"} 1.0' in text
    assert 'locsvc_inference_request_success_total{model="tiny_cam"} 1.0' in text
    assert 'locsvc_inference_request_failure_total{model="tiny_cam",reason="unsupported-media-type"} 1.0' in text
    assert "locsvc_inference_compute_duration_seconds_bucket" in text
    assert 'locsvc_image_decodes_total{format="JPEG"} 1.0' in text


async def test_api_key(make_client: Callable[..., Any], jpeg: bytes) -> None:
    async with make_client(api_key="s3cret") as c:
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/readyz")).status_code == 200
        for path in ("/cam", "/localize", "/pose"):
            r = await c.post(path, files=files(jpeg))
            assert r.status_code == 401 and r.json()["field"] == "X-API-Key"
            r = await c.post(path, files=files(jpeg), headers={"X-API-Key": "wrong"})
            assert r.status_code == 401
            assert (await c.post(path, files=files(jpeg), headers={"X-API-Key": "s3cret"})).status_code == 200
        assert (await c.get("/models")).status_code == 401
        assert (await c.get("/models", headers={"X-API-Key": "s3cret"})).status_code == 200


async def test_api_key_off_by_default(client: httpx.AsyncClient, jpeg: bytes) -> None:
    assert (await client.post("/cam", files=files(jpeg))).status_code == 200


async def test_cors(make_client: Callable[..., Any]) -> None:
    async with make_client(cors_origins=["http://example.test"]) as c:
        r = await c.options("/cam", headers={"Origin": "http://example.test", "Access-Control-Request-Method": "POST"})
        assert r.headers["access-control-allow-origin"] == "http://example.test"
    async with make_client() as c:
        r = await c.get("/healthz", headers={"Origin": "http://example.test"})
        assert "access-control-allow-origin" not in r.headers


async def test_openapi_documents_problems_and_examples(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "Problem" in spec["components"]["schemas"]
    cam = spec["paths"]["/cam"]["post"]
    assert {"413", "415", "422", "503"} <= set(cam["responses"])
    assert "application/problem+json" in cam["responses"]["415"]["content"]
    assert "example" in spec["components"]["schemas"]["Box"]


async def test_openapi_documents_the_image_body(client: httpx.AsyncClient) -> None:
    """The multipart field ``image`` (required) or the raw body, for each inference route; no dangling schemas."""
    spec = (await client.get("/openapi.json")).json()
    for path in ("/cam", "/localize", "/pose"):
        body = spec["paths"][path]["post"]["requestBody"]
        assert body["required"] is True
        assert set(body["content"]) == {"multipart/form-data", "image/jpeg", "image/png", "application/octet-stream"}
        form = body["content"]["multipart/form-data"]["schema"]
        assert form["required"] == ["image"] and "$ref" not in form
    assert not [name for name in spec["components"]["schemas"] if name.startswith("Body_")]


@pytest.mark.parametrize("path", ["/cam", "/localize", "/pose"])
async def test_png_overlay_is_drawn_at_the_image_size_up_to_the_max_side(client: httpx.AsyncClient, path: str) -> None:
    """A photo far larger than the model needs is decoded small for the model, but the overlay is drawn on it at
    its own size up to LOCSVC_OVERLAY_MAX_SIDE (1024), not at the reduced size the model's decode would give."""
    import io

    from PIL import Image

    data = encode(noise_image(1600, 1200, seed=3), "JPEG")
    r = await client.post(path, files=files(data), params={"format": "png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (1024, 768)
    j = await client.post(path, files=files(data))
    assert j.json()["overlay_png"] is None  # no overlay asked: none drawn, none encoded
