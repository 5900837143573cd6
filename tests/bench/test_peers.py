"""The peers of ``bench.perf --peers``: the minimal FastAPI app answers each route (on the tiny models, as a
server, and on the bundled ones in-process), and the harness's peer targets and 12 MP rule (no BentoML here:
it is not installed in this venv)."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import httpx
import pytest
from PIL import Image

from bench.loadgen import LoadResult
from bench.peers.drive import start_peer
from bench.perf import request_target
from bench.perf_report import Tally, check_targets, peers_table, report_rows
from bench.photos import draft_decode_ms
from tests.conftest import encode, noise_image


@pytest.fixture
def peer_env(tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PEER_MODELS_DIR", str(tiny_models_dir))
    monkeypatch.setenv("PEER_CAM_MODEL", "tiny_cam")
    monkeypatch.setenv("PEER_LOCALIZE_MODEL", "tiny_localize")
    monkeypatch.setenv("PEER_POSE_MODEL", "tiny_pose")
    return tiny_models_dir


def test_fastapi_peer_serves_every_route(peer_env: Path, tmp_path: Path) -> None:
    data = encode(noise_image(96, 64))
    with (
        start_peer("fastapi", Path("unused"), 4, tmp_path / "peer.log") as peer,
        httpx.Client(base_url=peer.url, timeout=30) as client,
    ):
        files = {"image": ("a.jpg", data, "image/jpeg")}
        cam = client.post("/cam?top_k=1", files=files)
        loc = client.post("/localize", files=files)
        pose = client.post("/pose", files=files)
        bad = client.post("/cam", files={"image": ("a.jpg", b"not an image", "image/jpeg")})
    assert cam.status_code == loc.status_code == pose.status_code == 200, peer.tail()
    (top,) = cam.json()["classes"]
    x1, y1, x2, y2 = top["box"]
    assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 64
    assert 0 < top["score"] <= 1
    assert len(loc.json()["box"]) == 4 and "label" in loc.json()
    assert len(pose.json()["joints"]) == len(json.loads((peer_env / "tiny_pose.json").read_text())["joints"]["names"])
    assert bad.status_code == 500  # a user's app: no error handling


def test_naive_pipeline_on_the_bundled_models() -> None:
    import skimage.data as skd

    from bench.peers.naive import cam_top1, load_models, localize, pose

    cam_model, loc_model, pose_model = load_models()
    buf = io.BytesIO()
    Image.fromarray(skd.chelsea()).save(buf, "JPEG", quality=90)
    top = cam_top1(cam_model, buf.getvalue())
    assert "cat" in top["label"]
    x1, y1, x2, y2 = top["box"]
    assert 0 <= x1 < x2 <= 451 and 0 <= y1 < y2 <= 300
    assert len(localize(loc_model, buf.getvalue())["box"]) == 4
    assert len(pose(pose_model, buf.getvalue())["joints"]) == 14


def test_request_targets() -> None:
    assert request_target("/cam", 1) == "/cam?top_k=1"
    assert request_target("/pose", 1) == "/pose"
    assert request_target("/cam", 1, "m_int8") == "/cam?top_k=1&model=m_int8"
    assert request_target("/localize", None, "m_int8") == "/localize?model=m_int8"
    assert request_target("/cam", None) == "/cam"


def test_draft_decode_is_timed() -> None:
    data = encode(noise_image(800, 600))
    assert draft_decode_ms(data, (100, 100), n=3) > 0


def _res(rps: float, p50: float) -> dict[str, object]:
    return {"throughput_rps": rps, "p50_ms": p50, "p95_ms": p50, "p99_ms": p50, "errors": 0, "round_rps": [rps]}


def test_peer_targets_and_12mp_rule() -> None:
    rows = []
    for c in (1, 4):
        for img in ("small", "phone"):
            rows.append(
                {
                    "endpoint": "/cam",
                    "image": img,
                    "concurrency": c,
                    "results": {
                        "http": _res(40, 20),
                        "http_int8": _res(80, 12),
                        "fastapi": _res(30, 25),
                        "bento_default": _res(20, 30),
                    },
                    "http_over_fastapi": 1.333,
                    "http_int8_over_fastapi": 2.667,
                    "http_over_bento_default": 2.0,
                }
            )
    report = {
        "rows": rows,
        "concurrency": [1, 4],
        "endpoints": ["/cam"],
        "service": {"rss_mb_after_load": 250.0, "ready_s_median": 1.2},
        "twelve_mp_rule": [
            {"endpoint": "/cam", "image": "phone", "S_ms": 20.0, "L_ms": 80.0, "D_ms": 40.0, "L_over_S_plus_D": 1.333}
        ],
    }
    got = {t["target"]: t["pass"] for t in check_targets(report)}
    assert got["/cam small c=4: http / minimal FastAPI throughput"]
    assert got["/cam small c=4: http int8 / minimal FastAPI throughput"]
    assert got["/cam phone c=4: http / BentoML default throughput"]
    assert got["/cam small c=1: http p50 / minimal FastAPI p50"]
    (rule,) = (k for k in got if "L / (S + D)" in k)
    assert not got[rule]
    table = peers_table(rows)
    assert table.count("\n") == 1 + len(rows) and "| 40.0, 20.0 |" in table


def _tally(requests_ok: int, seconds: float) -> Tally:
    t = Tally()
    t.add(LoadResult("/cam", 4, seconds, [10.0] * requests_ok, Counter({200: requests_ok})))
    return t


def test_fastapi_target_names_the_in_process_limit() -> None:
    """When the in-process limit ran, the FastAPI target says how far any server of our pipeline could get."""
    contenders = {"http": _tally(40, 1.0), "inproc": _tally(44, 1.0), "fastapi": _tally(40, 1.0)}
    (row,) = report_rows({("/cam", "small", 4): contenders})
    assert row["inproc_over_fastapi"] == pytest.approx(1.1) and row["http_over_fastapi"] == pytest.approx(1.0)
    report = {
        "rows": [row],
        "concurrency": [4],
        "endpoints": ["/cam"],
        "service": {"rss_mb_after_load": 250.0, "ready_s_median": 1.2},
    }
    got = {t["target"]: t["pass"] for t in check_targets(report)}
    assert got["/cam small c=4: http / minimal FastAPI throughput (the in-process limit: 1.10 x)"] is False
