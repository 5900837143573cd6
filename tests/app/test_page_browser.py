"""The try-it page (GET /), end to end: the real service in a subprocess, the page in headless Chromium.

Needs Debian's ``/usr/bin/chromium`` and the ``playwright`` package (``make install-browser``); skipped
with the reason when either is missing.  Screenshots go to ``artifacts/`` at the repository root."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from app.config import REPO_MODELS
from tests.live import Server

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} not found (Debian's chromium: `make install-browser`)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (`make install-browser`)")
skd = pytest.importorskip("skimage.data")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT_MS = 20_000
# Waits are selectors or locators, never wait_for_function: when its condition is not yet true, playwright polls
# a string predicate with eval inside the page, which the page's CSP (script-src 'self') refuses - a flake.
API_KEY = "k"


# ---- the service and the browser -------------------------------------------------------------------------


def served(server: Server) -> set[str]:
    models = httpx.get(f"{server.url}/models", headers={"X-API-Key": API_KEY}, timeout=5).json()
    return {path for m in models for path in m["serves"]}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """Two services on the bundled models, started together: an open one and one that needs an API key."""
    logs = tmp_path_factory.mktemp("server-logs")
    started = {
        "open": Server(logs / "open.log"),
        "keyed": Server(logs / "keyed.log", LOCSVC_AUTH="on", LOCSVC_API_KEY=API_KEY),
    }
    try:
        for s in started.values():
            s.wait_ready()
        yield started
    finally:
        for s in started.values():
            s.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


class Page:
    """A fresh browser context on the page, recording script errors and every request it makes."""

    def __init__(self, browser: Any, base: str) -> None:
        self.base = base
        self.context = browser.new_context(viewport={"width": 1100, "height": 1000})
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        # API calls may fail on purpose (401, 404); the page's own files may not.
        self.page.on(
            "console",
            lambda m: m.type == "error" and "Failed to load resource" not in m.text and self.errors.append(m.text),
        )
        self.page.on(
            "response",
            lambda r: (
                r.status >= 400
                and r.request.method == "GET"
                and "/models" not in r.url
                and self.errors.append(f"{r.status} {r.url}")
            ),
        )
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(f"{base}/")

    def choose(self, image: Path) -> None:
        self.page.set_input_files("#file", str(image))
        self.page.wait_for_selector("body[data-state=ready]")

    def run(self, task: str, expect: str = "done") -> None:
        self.page.select_option("#task", task)
        self.page.click("#run")
        try:
            self.page.wait_for_selector(f"body[data-state={expect}]")
        except sync_api.TimeoutError:
            state = self.page.evaluate("document.body.dataset.state")
            pytest.fail(
                f"page state {state!r}, not {expect!r}, after {TIMEOUT_MS} ms; status: {self.text('#status')!r}; "
                f"json: {self.text('#json')[:500]!r}; script errors: {self.errors}; last requests: {self.requests[-6:]}"
            )

    def text(self, selector: str) -> str:
        return str(self.page.text_content(selector) or "")

    def canvas(self) -> np.ndarray:
        """The canvas pixels (H, W, 3) as int16, through a PNG."""
        url = self.page.evaluate("document.getElementById('canvas').toDataURL('image/png')")
        png = base64.b64decode(url.split(",", 1)[1])
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)

    def response(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.text("#json"))
        return body

    def close(self) -> None:
        self.context.close()
        assert not self.errors, self.errors
        outside = [
            u for u in self.requests if not u.startswith(self.base + "/") and not u.startswith(("blob:", "data:"))
        ]
        assert not outside, f"the page must be self-contained, it fetched {outside}"

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def _save(tmp_path_factory: pytest.TempPathFactory, name: str, pixels: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("images") / name
    Image.fromarray(pixels).save(path, quality=92)
    return path


@pytest.fixture(scope="module")
def cat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save(tmp_path_factory, "chelsea.jpg", skd.chelsea())


@pytest.fixture(scope="module")
def person(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save(tmp_path_factory, "astronaut.jpg", skd.astronaut())


# ---- pixel checks ----------------------------------------------------------------------------------------


def box_on_canvas(box: dict[str, float], scale: float) -> tuple[int, int, int, int]:
    return tuple(round(box[k] * scale) for k in ("x1", "y1", "x2", "y2"))  # type: ignore[return-value]


def assert_box_drawn(pixels: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """A white line with a dark outline crosses the middle of the left, right and bottom edges (the label
    plate may cover the top one)."""
    x1, y1, x2, y2 = box
    h, w = pixels.shape[:2]
    ym, xm = (y1 + y2) // 2, (x1 + x2) // 2
    for name, (x, y) in {"left": (x1, ym), "right": (x2, ym), "bottom": (xm, y2)}.items():
        patch = pixels[max(0, y - 4) : min(h, y + 5), max(0, x - 4) : min(w, x + 5)]
        white = (patch.min(axis=2) > 225).any()
        dark = (patch.max(axis=2) < 80).any()
        assert white and dark, f"no box line at the {name} edge ({x}, {y}):\n{patch.tolist()}"


# ---- tests -----------------------------------------------------------------------------------------------


def test_page_and_static_files(servers: dict[str, Server]) -> None:
    base = servers["keyed"].url  # the page itself needs no API key
    r = httpx.get(f"{base}/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert '<script type="module" src="static/app.js">' in r.text
    for name, ctype in {"app.js": "text/javascript", "style.css": "text/css"}.items():
        r = httpx.get(f"{base}/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(ctype), name
    for name in ("index.html", "nope.js", "..%2Fpage.py", "%2E%2E%2F%2E%2E%2Fconfig.py"):
        r = httpx.get(f"{base}/static/{name}")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json", name
    assert "/" not in httpx.get(f"{base}/openapi.json").json()["paths"]


def test_cam(servers: dict[str, Server], browser: Any, cat: Path) -> None:
    p = Page(browser, servers["open"].url)
    p.choose(cat)
    plain = p.canvas()  # the page's own un-annotated drawing of the picture
    p.run("cam")

    body = p.response()
    top = body["classes"][0]
    assert "cat" in p.text("#result-label").lower() and top["name"] in p.text("#result-label")
    assert top["name"] == "Egyptian cat" and body["image"]["width"] == 451 and len(body["classes"]) == 5
    assert body["model"] in p.text("#status")
    assert p.page.locator("#class-picker option").count() == 5
    assert not p.page.is_visible("#json")
    p.page.click("#json-details summary")  # the raw JSON, one click away
    assert p.page.is_visible("#json") and '"grid_size"' in p.text("#json")

    first = p.canvas()
    assert first.shape == plain.shape and first.shape[1] == 720 and abs(first.shape[0] - 300 * 720 / 451) < 1
    scale = first.shape[1] / body["image"]["width"]
    x1, y1, x2, y2 = box = box_on_canvas(top["box"], scale)
    assert_box_drawn(first, box)
    # The jet heatmap is hot (red up, blue down) inside the box and cold outside it.
    shift = (first - plain)[..., 0] - (first - plain)[..., 2]
    inside = np.zeros(shift.shape, dtype=bool)
    inside[y1 + 6 : y2 - 6, x1 + 6 : x2 - 6] = True
    outside = np.ones(shift.shape, dtype=bool)
    outside[max(0, y1 - 40) : y2 + 6, max(0, x1 - 6) : x2 + 6] = False
    assert inside.sum() > 1000 and outside.sum() > 1000
    assert shift[inside].mean() > shift[outside].mean() + 40, (shift[inside].mean(), shift[outside].mean())
    px, py = (round(v * scale) for v in top["peak"])
    assert np.abs(first - plain).sum() > 0 and shift[py, px + 8] > 30  # beside the white peak dot: hot
    p.screenshot("page-cam.png")

    # Another class: its own label, map and box.
    second = body["classes"][1]
    p.page.select_option("#class-picker", "1")
    p.page.locator("#result-label", has_text=second["name"]).wait_for()
    again = p.canvas()
    assert np.abs(again - first).mean() > 1.0
    assert_box_drawn(again, box_on_canvas(second["box"], scale))
    p.close()


def test_api_key(servers: dict[str, Server], browser: Any, cat: Path) -> None:
    p = Page(browser, servers["keyed"].url)
    p.page.wait_for_selector("#models >> text=API key")
    p.choose(cat)
    p.run("cam", expect="error")
    assert "401" in p.text("#status") and "missing or wrong X-API-Key header" in p.text("#status")
    assert p.page.is_visible("#status.error")
    assert json.loads(p.text("#json"))["status"] == 401
    p.screenshot("page-401.png")

    p.page.fill("#api-key", API_KEY)
    p.page.press("#api-key", "Tab")  # as a user leaves the field: the page lists the models with the key
    p.page.wait_for_selector("#models >> text=/^models:/")
    p.run("cam")
    assert "cat" in p.text("#result-label").lower()
    p.page.reload()  # the key is remembered
    assert p.page.input_value("#api-key") == API_KEY
    p.page.wait_for_selector("#models >> text=/^models:/")
    p.close()


def test_exif_orientation(servers: dict[str, Server], browser: Any, tmp_path: Path) -> None:
    """A landscape JPEG tagged "rotate 90° clockwise" is a portrait picture for the API and for the page."""
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(skd.chelsea()).save(path, quality=90, exif=exif)
    p = Page(browser, servers["open"].url)
    p.choose(path)
    plain = p.canvas()
    p.run("cam")
    body = p.response()
    assert (body["image"]["width"], body["image"]["height"], body["image"]["exif_orientation"]) == (300, 451, 6)
    pixels = p.canvas()
    assert pixels.shape == plain.shape and pixels.shape[0] == 720 and abs(pixels.shape[1] - 300 * 720 / 451) < 1
    # The page drew the picture upright: the cat's face looks like the un-rotated upright cat, turned.
    upright = np.asarray(
        Image.fromarray(skd.chelsea()).transpose(Image.Transpose.ROTATE_270).resize(plain.shape[1::-1])
    )
    assert np.abs(plain - upright.astype(np.int16)).mean() < 12
    assert_box_drawn(pixels, box_on_canvas(body["classes"][0]["box"], pixels.shape[1] / 300))
    p.close()


@pytest.mark.parametrize("task", ["localize", "pose"])
def test_task_without_model(servers: dict[str, Server], browser: Any, cat: Path, task: str) -> None:
    if f"/{task}" in served(servers["open"]):
        pytest.skip(f"a model in {REPO_MODELS} serves /{task}: test_task_result covers it")
    p = Page(browser, servers["open"].url)
    p.page.locator(f"#task option[value={task}]", has_text="(no model loaded)").wait_for(state="attached")
    p.choose(cat)
    p.run(task, expect="error")
    assert f"no {task} model is loaded" in p.text("#status") and "try another task" in p.text("#status")
    p.close()


@pytest.mark.parametrize("task", ["localize", "pose"])
def test_task_result(servers: dict[str, Server], browser: Any, cat: Path, person: Path, task: str) -> None:
    if f"/{task}" not in served(servers["open"]):
        pytest.skip(f"no model in {REPO_MODELS} serves /{task} yet (GET /models); its 404 is checked instead")
    p = Page(browser, servers["open"].url)
    p.choose(cat if task == "localize" else person)
    plain = p.canvas()
    p.run(task)
    p.screenshot(f"page-{task}.png")
    body = p.response()
    pixels = p.canvas()
    scale = pixels.shape[1] / body["image"]["width"]
    if task == "localize":
        assert body["label"]["name"] in p.text("#result-label")
        assert_box_drawn(pixels, box_on_canvas(body["box"], scale))
    else:
        assert p.text("#result-label") == f"{len(body['joints'])} joints" and len(body["joints"]) == 14
        # a dot of the joint's side colour on each visible joint (labels drawn later may cover a few)
        side_colour = {"l_": (79, 195, 247), "r_": (255, 138, 101)}
        checked = matched = 0
        for j in body["joints"]:
            x, y = round(j["x"] * scale), round(j["y"] * scale)
            if (j["visibility"] or 0) < 0.5 or not (0 <= x < pixels.shape[1] and 0 <= y < pixels.shape[0]):
                continue
            want = np.array(side_colour.get(j["name"][:2], (255, 238, 88)))
            checked += 1
            matched += int(np.abs(pixels[y, x, :3] - want).sum() < 40)
        # (with no box the person finder frames the astronaut's upper body, and fewer joints are predicted visible)
        assert checked >= 5 and matched >= 0.8 * checked, (matched, checked)
        assert np.abs(pixels.astype(int) - plain.astype(int)).sum() > 0
    p.close()


def test_model_picker(servers: dict[str, Server], browser: Any, cat: Path) -> None:
    """The picker lists the models that serve the chosen task; the one picked answers."""
    models = httpx.get(f"{servers['open'].url}/models", timeout=10).json()
    localize = [m["name"] for m in models if "/localize" in m["serves"]]
    if not localize:
        pytest.skip(f"no model in {REPO_MODELS} serves /localize")
    p = Page(browser, servers["open"].url)
    p.page.select_option("#task", "localize")
    p.page.locator(f"#model option:nth-child({len(localize) + 1})").wait_for(state="attached")
    options = p.page.eval_on_selector_all("#model option", "els => els.map((e) => e.value)")
    assert options == ["", *localize]
    p.choose(cat)
    p.page.select_option("#model", localize[-1])
    p.run("localize")
    assert p.response()["model"] == localize[-1] and f"by {localize[-1]}" in p.text("#status")
    p.page.select_option("#task", "pose")  # another task: its own list, back to the default
    pose = [m["name"] for m in models if "/pose" in m["serves"]]
    assert p.page.eval_on_selector_all("#model option", "els => els.map((e) => e.value)") == ["", *pose]
    p.close()


def test_method_picker(servers: dict[str, Server], browser: Any, cat: Path) -> None:
    """The CAM method picker lists what the chosen model serves (GET /models' cam_methods); the one picked answers."""
    models = httpx.get(f"{servers['open'].url}/models", timeout=10).json()
    cam = next(m for m in models if "/cam" in m["serves"] and "eigencam" in m.get("cam_methods", []))
    p = Page(browser, servers["open"].url)
    p.page.select_option("#model", cam["name"])
    p.page.locator(f"#method option:nth-child({len(cam['cam_methods']) + 1})").wait_for(state="attached")
    options = p.page.eval_on_selector_all("#method option", "els => els.map((e) => e.value)")
    assert options == ["", *cam["cam_methods"]]
    p.choose(cat)
    p.page.select_option("#method", "eigencam")
    p.run("cam")
    body = p.response()
    assert body["method"] == "eigencam" and "eigencam" in p.text("#result-label")
    p.close()
