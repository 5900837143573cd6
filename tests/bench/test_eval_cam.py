"""bench.eval_cam's levers (--sweep / --rules): the rules agree with the service's functions, no data needed."""

from __future__ import annotations

import numpy as np
import pytest

from app.core.cam import CamNorm, CamRegion, class_activation_maps, normalize_map, resample, threshold_box
from bench.eval_cam import (
    DEFAULT_LEVER_RULE,
    Rule,
    compare,
    image_ious,
    lever_norm,
    lever_weight,
    region_boxes,
    summarize,
    sweep_rules,
)


def _maps(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grid = rng.normal(size=(7, 7))
    pos = (np.arange(64) + 0.5) * 7 / 64
    return resample(grid, pos, pos)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("norm", list(CamNorm))
def test_region_boxes_equal_the_service_threshold_box(seed: int, norm: CamNorm) -> None:
    nm = normalize_map(_maps(seed), norm)
    assert np.array_equal(lever_norm(_maps(seed), norm.value), nm)
    for t in (0.05, 0.2, 0.45, 0.8, 1.0):
        boxes = region_boxes(nm, t)
        for region in CamRegion:
            np.testing.assert_array_equal(boxes[region.value], threshold_box(nm, t, region))
        # multi holds the peak's and the largest's boxes; union0 = all; union1 = the largest regions only
        assert any(np.array_equal(b, boxes["peak"]) for b in boxes["multi"])
        np.testing.assert_array_equal(region_boxes(nm, t, ("union0",))["union0"], boxes["all"])


def test_union_fraction_drops_small_regions() -> None:
    m = np.zeros((20, 20))
    m[2:10, 2:10] = 1.0  # 64 px
    m[15:17, 15:17] = 0.9  # 4 px
    b = region_boxes(m, 0.5, ("union0.5", "union0.01", "multi"))
    np.testing.assert_array_equal(b["union0.5"], [2, 2, 10, 10])
    np.testing.assert_array_equal(b["union0.01"], [2, 2, 17, 17])
    assert len(b["multi"]) == 2


def test_clamp_and_percentile_levers() -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(size=(5, 8)).astype(np.float32)
    v = rng.random((8, 3, 3)).astype(np.float32)
    wp = lever_weight(w, "clamp")
    assert (wp >= 0).all() and np.array_equal(wp[w > 0], w[w > 0])
    assert np.array_equal(lever_weight(w, "signed"), w)
    np.testing.assert_allclose(
        class_activation_maps(v, wp, [2])[0], np.tensordot(np.maximum(w[2], 0), v, axes=1), rtol=1e-5
    )
    m = _maps(3)
    p = lever_norm(m, "pas90")
    assert p.min() == 0.0 and p.max() == 1.0
    assert np.isclose((p >= 1.0).mean(), 0.1, atol=0.01)  # the top decile is saturated
    assert (lever_norm(np.ones((4, 4)), "pas90") == 1).all()


def test_rules_parse_and_round_trip() -> None:
    r = Rule.parse("clamp/pas90/union0.5/0.35")
    assert r == Rule("clamp", "pas90", "union0.5", 0.35) and Rule.parse(str(r)) == r
    assert str(DEFAULT_LEVER_RULE) == "signed/minmax/peak/0.2"
    assert DEFAULT_LEVER_RULE in sweep_rules()
    for bad in ("signed/minmax/peak", "both/minmax/peak/0.2", "signed/median/peak/0.2", "signed/minmax/peak/2"):
        with pytest.raises(ValueError):
            Rule.parse(bad)


def test_image_ious_and_reports() -> None:
    rules = sweep_rules(thresholds=(0.2, 0.5))
    raw = {"signed": _maps(0), "clamp": _maps(1)}
    nm = normalize_map(raw["signed"])
    gt = tuple(float(x) for x in threshold_box(nm, 0.2, CamRegion.peak))
    ious = image_ious(raw, gt, rules)
    assert ious[rules.index(DEFAULT_LEVER_RULE)] == pytest.approx(1.0)
    multi = [j for j, r in enumerate(rules) if r.region == "multi"]
    single = {(r.clamp, r.norm, r.threshold): ious[j] for j, r in enumerate(rules) if r.region == "peak"}
    for j in multi:  # the best of all regions' boxes is at least the peak region's
        r = rules[j]
        assert ious[j] >= single[(r.clamp, r.norm, r.threshold)] - 1e-12
    table = np.stack([ious, np.zeros_like(ious)])
    s = summarize(table, rules)
    assert s["images"] == 2 and s["gt_known_loc_default"] == 0.5
    c = compare(table[:, :3], rules[:3])
    assert set(c["rules"]) == {str(r) for r in rules[:3]}  # type: ignore[call-overload]
