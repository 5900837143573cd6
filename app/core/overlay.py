"""Pictures of results: CAM heatmaps, boxes, skeletons drawn over the image (Pillow + numpy)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

BOX_COLOR = (255, 214, 10)
LEFT_COLOR, RIGHT_COLOR, CENTER_COLOR = (66, 135, 245), (245, 90, 66), (60, 220, 120)


def display_image(image: Image.Image, max_side: int) -> Image.Image:
    """A copy of the image whose long side is at most ``max_side`` pixels."""
    scale = min(1.0, max_side / max(image.width, image.height))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR) if size != image.size else image.copy()


def jet(values: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """The 'jet' colormap: values in [0, 1] -> uint8 RGB of shape ``values.shape + (3,)``."""
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    rgb = np.stack([1.5 - np.abs(4.0 * v - 3.0), 1.5 - np.abs(4.0 * v - 2.0), 1.5 - np.abs(4.0 * v - 1.0)], axis=-1)
    out: npt.NDArray[np.uint8] = (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return out


def blend_heatmap(image: Image.Image, heat: npt.ArrayLike, alpha: float = 0.5) -> Image.Image:
    """Blend a [0, 1] heatmap of the image's size over it."""
    colors = Image.fromarray(jet(heat), "RGB")
    if colors.size != image.size:
        colors = colors.resize(image.size, Image.Resampling.BILINEAR)
    return Image.blend(image.convert("RGB"), colors, alpha)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (OSError, ValueError):  # Pillow without FreeType
        return ImageFont.load_default()


def draw_box(
    image: Image.Image, xyxy: Sequence[float], label: str | None = None, color: tuple[int, int, int] = BOX_COLOR
) -> None:
    """Draw an xyxy box (in the image's pixels) and an optional caption, in place."""
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 200))
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=color, width=width)
    if label:
        font = _font(max(12, round(max(image.size) / 40)))
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        tw, th = right - left + 8, bottom - top + 6
        ty = y1 - th if y1 - th >= 0 else y1
        tx = min(max(0.0, x1), max(0.0, image.width - tw))
        draw.rectangle([tx, ty, tx + tw, ty + th], fill=color)
        draw.text((tx + 4 - left, ty + 3 - top), label, fill=(0, 0, 0), font=font)


def draw_skeleton(
    image: Image.Image,
    points: npt.ArrayLike,
    edges: Sequence[tuple[int, int]],
    names: Sequence[str],
) -> None:
    """Draw joints ``(k, 2)`` (x, y in the image's pixels) and the edges between them, in place."""
    pts = np.asarray(points, dtype=np.float64)
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 150))
    radius = width + 1

    def color(name: str) -> tuple[int, int, int]:
        return LEFT_COLOR if name.startswith("l_") else RIGHT_COLOR if name.startswith("r_") else CENTER_COLOR

    for a, b in edges:
        draw.line([tuple(pts[a]), tuple(pts[b])], fill=color(names[b]), width=width)
    for (x, y), name in zip(pts, names, strict=True):
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color(name), outline=(0, 0, 0))


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=3)
    return buf.getvalue()
