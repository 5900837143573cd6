"""PCP@0.5 (strict, as DeepPose reports it) and PCK@0.2 with the torso diameter, on (N, 14, 2) joints.

* PCP: a limb is correct when *both* predicted endpoints lie within 0.5 x the limb's ground-truth length of
  their ground-truth positions.  Limbs (LSP order): upper legs hip-knee, lower legs knee-ankle, upper arms
  shoulder-elbow, lower arms elbow-wrist (left and right, averaged), torso = the stick from the hips' midpoint
  to the shoulders' midpoint, head = neck-head_top.  Mean PCP = mean over the 8 arm and leg limbs.
* PCK@0.2: a joint is correct when within 0.2 x the torso diameter, defined as in DeepPose's PDJ as the
  distance between the ground-truth left shoulder and right hip.
A ``mask`` (N, 14) excludes unannotated joints (limbs need both endpoints annotated).
"""

from __future__ import annotations

from typing import Any

import numpy as np

R_ANKLE, R_KNEE, R_HIP, L_HIP, L_KNEE, L_ANKLE = range(6)
R_WRIST, R_ELBOW, R_SHOULDER, L_SHOULDER, L_ELBOW, L_WRIST, NECK, HEAD_TOP = range(6, 14)

LIMBS: dict[str, tuple[tuple[int, int], ...]] = {
    "upper_legs": ((R_HIP, R_KNEE), (L_HIP, L_KNEE)),
    "lower_legs": ((R_KNEE, R_ANKLE), (L_KNEE, L_ANKLE)),
    "upper_arms": ((R_SHOULDER, R_ELBOW), (L_SHOULDER, L_ELBOW)),
    "lower_arms": ((R_ELBOW, R_WRIST), (L_ELBOW, L_WRIST)),
    "head": ((NECK, HEAD_TOP),),
}
ARM_LEG_PARTS = ("upper_legs", "lower_legs", "upper_arms", "lower_arms")
PCP_THRESHOLD = 0.5
PCK_THRESHOLD = 0.2


def _with_torso_midpoints(xy: np.ndarray) -> np.ndarray:
    """Append hips' midpoint (index 14) and shoulders' midpoint (index 15) to (N, 14, 2) joints."""
    hips = (xy[:, R_HIP] + xy[:, L_HIP]) / 2
    shoulders = (xy[:, R_SHOULDER] + xy[:, L_SHOULDER]) / 2
    return np.concatenate([xy, hips[:, None], shoulders[:, None]], axis=1)


def _with_torso_mask(mask: np.ndarray) -> np.ndarray:
    hips = mask[:, R_HIP] & mask[:, L_HIP]
    shoulders = mask[:, R_SHOULDER] & mask[:, L_SHOULDER]
    return np.concatenate([mask, hips[:, None], shoulders[:, None]], axis=1)


def limb_correct(pred: np.ndarray, gt: np.ndarray, a: int, b: int, thr: float = PCP_THRESHOLD) -> np.ndarray:
    """(N,) bool: both endpoints of limb (a, b) within ``thr`` x its ground-truth length."""
    length = np.linalg.norm(gt[:, a] - gt[:, b], axis=1)
    da = np.linalg.norm(pred[:, a] - gt[:, a], axis=1)
    db = np.linalg.norm(pred[:, b] - gt[:, b], axis=1)
    correct: np.ndarray = (da <= thr * length) & (db <= thr * length)
    return correct


def pcp(
    pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None, thr: float = PCP_THRESHOLD
) -> dict[str, float]:
    """Strict PCP per part (L/R averaged), torso, head and ``mean`` over the 8 arm/leg limbs."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    m = np.ones(gt.shape[:2], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    p16, g16, m16 = _with_torso_midpoints(pred), _with_torso_midpoints(gt), _with_torso_mask(m)
    limbs = {**LIMBS, "torso": ((14, 15),)}
    out: dict[str, float] = {}
    arm_leg: list[float] = []
    for part, pairs in limbs.items():
        hits, total = 0.0, 0
        for a, b in pairs:
            valid = m16[:, a] & m16[:, b]
            ok = limb_correct(p16, g16, a, b, thr)
            hits += float(ok[valid].sum())
            total += int(valid.sum())
            if part in ARM_LEG_PARTS:
                arm_leg.extend(ok[valid].astype(float).tolist())
        out[part] = hits / total if total else float("nan")
    out["mean"] = float(np.mean(arm_leg)) if arm_leg else float("nan")
    return out


def torso_diameter(gt: np.ndarray) -> np.ndarray:
    """(N,) distance between the left shoulder and the right hip."""
    diameter: np.ndarray = np.linalg.norm(np.asarray(gt)[:, L_SHOULDER] - np.asarray(gt)[:, R_HIP], axis=1)
    return diameter


def pck(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None, thr: float = PCK_THRESHOLD) -> dict[str, Any]:
    """PCK@thr with the torso diameter: ``mean`` over annotated joints and ``per_joint`` (14 values)."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    m = np.ones(gt.shape[:2], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    dist = np.linalg.norm(pred - gt, axis=2)
    ok = dist <= thr * torso_diameter(gt)[:, None]
    per_joint = [float(ok[m[:, j], j].mean()) if m[:, j].any() else float("nan") for j in range(gt.shape[1])]
    return {"mean": float(ok[m].mean()) if m.any() else float("nan"), "per_joint": per_joint}
