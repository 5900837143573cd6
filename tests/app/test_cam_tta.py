"""/cam?tta=flip: the volume and logits averaged over the image and its mirror."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from app.core.cam import flip_average
from tests.conftest import encode, files, noise_image

pytestmark = pytest.mark.anyio


@settings(max_examples=50, deadline=None)
@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 6)),
        elements=st.floats(-5, 5, width=32),
    )
)
def test_flip_average_of_a_volume_and_its_exact_mirror_is_the_volume(v: np.ndarray) -> None:
    np.testing.assert_allclose(flip_average(v, v[:, :, ::-1]), v, rtol=1e-6, atol=1e-6)


def test_flip_average_refuses_volumes_of_different_shapes() -> None:
    with pytest.raises(ValueError, match="one shape"):
        flip_average(np.zeros((2, 3, 4)), np.zeros((2, 4, 3)))


async def test_tta_is_mirror_equivariant(client: httpx.AsyncClient) -> None:
    """With tta=flip, the mirrored photo gets the mirrored box and the same classes (exactly, up to float)."""
    img = noise_image(96, 64, seed=7)
    a = (
        await client.post("/cam", files=files(encode(img, "PNG"), "a.png", "image/png"), params={"tta": "flip"})
    ).json()
    mirrored = encode(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "PNG")
    b = (await client.post("/cam", files=files(mirrored, "b.png", "image/png"), params={"tta": "flip"})).json()
    assert a["tta"] == "flip" and [c["index"] for c in a["classes"]] == [c["index"] for c in b["classes"]]
    for ca, cb in zip(a["classes"], b["classes"], strict=True):
        assert ca["logit"] == pytest.approx(cb["logit"], abs=1e-4)
        assert ca["box"]["x1"] == pytest.approx(96 - cb["box"]["x2"], abs=1e-3)
        assert ca["box"]["y1"] == pytest.approx(cb["box"]["y1"], abs=1e-3)
    plain = (await client.post("/cam", files=files(encode(img, "PNG"), "a.png", "image/png"))).json()
    assert plain["tta"] == "none" and plain["classes"][0]["logit"] != pytest.approx(a["classes"][0]["logit"])


async def test_an_unknown_tta_is_a_422_naming_it(client: httpx.AsyncClient, jpeg: bytes) -> None:
    r = await client.post("/cam", files=files(jpeg), params={"tta": "scale"})
    assert r.status_code == 422 and "tta" in r.text
