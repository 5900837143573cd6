"""Property: boxes and joints map back inside the original (oriented) image, for any size, aspect,
EXIF orientation, fit and person box - through decode, fit and the model-output conversions."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from app.core.fitting import FitMode, InputSpec, fit_image
from app.core.imaging import open_image
from app.services.localize import model_box_to_input_xyxy
from tests.conftest import encode

unit = st.floats(0.0, 1.0)


@settings(max_examples=40, deadline=None)
@given(
    w=st.integers(1, 900),
    h=st.integers(1, 900),
    orientation=st.integers(1, 8),
    mode=st.sampled_from(list(FitMode)),
    box=st.tuples(unit, unit, unit, unit),
    joints=st.lists(st.tuples(unit, unit), min_size=1, max_size=14),
    region=st.tuples(unit, unit, unit, unit),
)
def test_outputs_map_inside_the_oriented_image(
    w: int,
    h: int,
    orientation: int,
    mode: FitMode,
    box: tuple[float, ...],
    joints: list[tuple[float, float]],
    region: tuple[float, ...],
) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.new("RGB", (w, h), (10, 200, 30)), "JPEG", exif=exif)
    spec = InputSpec(64, 96, fit=mode)
    opened = open_image(data, max_pixels=10**8)
    d = opened.decode(min(1.0, spec.needed_fraction(opened.width, opened.height)), 10**10)
    iw, ih = (h, w) if orientation >= 5 else (w, h)
    assert (d.width, d.height) == (iw, ih)

    # a localize box: (r, c, h, w) fractions of the model input, any values in [0, 1]
    r, c, bh, bw = box
    _, fit = fit_image(d, spec)
    xyxy = fit.input_boxes_to_image(
        model_box_to_input_xyxy(np.array([r, c, bh * (1 - r), bw * (1 - c)]), "rchw_norm", 96, 64)
    )
    eps = 1e-9 * max(iw, ih) + 1e-9
    if mode is FitMode.stretch:
        assert -eps <= xyxy[0] <= xyxy[2] <= iw + eps and -eps <= xyxy[1] <= xyxy[3] <= ih + eps

    # joints inside a person box (any box inside the image) stay inside that box
    x1, x2 = sorted((region[0] * iw, region[2] * iw))
    y1, y2 = sorted((region[1] * ih, region[3] * ih))
    if x2 - x1 > 1e-6 and y2 - y1 > 1e-6:
        _, pfit = fit_image(d, spec, region=(x1, y1, x2, y2))
        pts = pfit.region_points_to_image(np.array(joints))
        assert np.all(pts[:, 0] >= x1 - eps) and np.all(pts[:, 0] <= x2 + eps)
        assert np.all(pts[:, 1] >= y1 - eps) and np.all(pts[:, 1] <= y2 + eps)
