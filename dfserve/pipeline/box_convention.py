"""Face boxes in the seed's convention: RetinaFace's faces mapped to the box dlib's HOG detector draws.

The seed's checkpoints learned faces framed by `face_recognition.face_locations` (dlib HOG); RetinaFace
frames them taller and higher. `to_seed_boxes` predicts dlib's box from RetinaFace's box and five
landmarks (a linear model on the face's own scale: `spec.BOX_SEED_COEF`), snaps it to dlib's discrete
sizes and grid (`spec.BOX_DLIB_*`) and trims it to the frame as face_recognition does (see spec.py,
benchmarks/fit_box_mapping.py, docs/contract.md). It is applied where boxes are decoded (after NMS), so
every path — CPU, torch/GPU, Triton, the tracker, the timeline — crops and reports the same boxes.

Written against the operations numpy arrays and torch tensors share, in one order, in the boxes'
dtype (float32 on every path), so numpy and torch (CPU or CUDA) give the same boxes bit for bit: only
IEEE-exact operations (+ - * / sqrt, round, comparisons, table look-ups; no exp/log, no matmul).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional, Tuple

import numpy as np

from .. import spec
from ..errors import UsageError


def check_box_convention(box: str) -> str:
    if box not in spec.BOX_CONVENTIONS:
        raise UsageError(f"--box must be one of {', '.join(spec.BOX_CONVENTIONS)}, got {box!r}")
    return box


@lru_cache(maxsize=1)
def dlib_tables() -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds [L], sides [L], cells [L]) float64: a predicted side s takes level l = #(s > thresholds)
    (thresholds between levels, geometric middles); sides and cells of each level."""
    l = np.arange(spec.BOX_DLIB_LEVELS, dtype=np.float64)
    sides = spec.BOX_DLIB_SIDE0 * spec.BOX_DLIB_LEVEL_RATIO ** l
    thr = spec.BOX_DLIB_SIDE0 * spec.BOX_DLIB_LEVEL_RATIO ** (l[1:] - 0.5)
    return thr, sides, sides / spec.BOX_DLIB_CELLS


def _f32(v: float) -> float:
    return float(np.float32(v))  # a constant exactly representable in float32: one rounding on every path


def to_seed_boxes(boxes, landmarks, frame_hw: Optional[Tuple[float, float]] = None, coef=None, snap: bool = True):
    """RetinaFace boxes [N,4] (x1, y1, x2, y2, frame pixels) and their landmarks [N,10] (x, y of left eye,
    right eye, nose, left and right mouth corners, frame pixels) -> dlib-convention boxes [N,4] (the
    boxes' dtype), trimmed to a frame of `frame_hw` = (height, width) when given. numpy or torch.
    `coef` / `snap`: the fitting script's overrides (default: spec.BOX_SEED_COEF, snapped to dlib's grid)."""
    torch_in = hasattr(boxes, "new_tensor")
    if torch_in:
        import torch as xp

        def const(v):
            return xp.tensor(np.asarray(v, np.float64), dtype=boxes.dtype, device=boxes.device)
    else:
        xp = np
        boxes = np.asarray(boxes)

        def const(v):
            return np.asarray(v, dtype=boxes.dtype)
    if landmarks is None:
        raise ValueError("the seed box convention needs the detector's five landmarks (or use --box retinaface)")
    b, p = boxes, landmarks
    if b.shape[0] == 0:
        return b[:, :4] * 1
    cx, cy = (b[:, 0] + b[:, 2]) * 0.5, (b[:, 1] + b[:, 3]) * 0.5
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    ex, ey = (p[:, 0] + p[:, 2]) * 0.5, (p[:, 1] + p[:, 3]) * 0.5
    mx, my = (p[:, 6] + p[:, 8]) * 0.5, (p[:, 7] + p[:, 9]) * 0.5
    rx, ry = (ex + mx) * 0.5, (ey + my) * 0.5
    dx, dy = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    ux, uy = ex - mx, ey - my
    iod2 = dx * dx + dy * dy
    s = xp.sqrt(iod2 + ux * ux + uy * uy)
    s = xp.where(s > 0, s, w * 0 + 1)  # degenerate landmarks (never from the network): no division by zero
    feats = ((cx - rx) / s, (cy - ry) / s, w / s, h / s, xp.sqrt(iod2) / s, (p[:, 4] - rx) / s, (p[:, 5] - ry) / s,
             ux / s, uy / s, dy / s)
    coef = spec.BOX_SEED_COEF if coef is None else coef
    t = []
    for row in coef:
        acc = feats[0] * 0 + _f32(row[0])
        for c, f in zip(row[1:], feats):
            acc = acc + _f32(c) * f
        t.append(acc)
    ncx, ncy, side = rx + t[0] * s, ry + t[1] * s, t[2] * s
    half = side * 0.5
    out = xp.stack([ncx - half, ncy - half, ncx + half, ncy + half], -1)
    if snap:
        thr, sides, cells = dlib_tables()
        lvl = (side[:, None] > const(thr)[None, :]).sum(1)
        sz, cell = const(sides)[lvl], const(cells)[lvl]
        (ax, bx), (ay, by) = spec.BOX_DLIB_GRID_X, spec.BOX_DLIB_GRID_Y
        ax, bx, ay, by = _f32(ax), _f32(bx), _f32(ay), _f32(by)
        hs = sz * 0.5
        left = (xp.round((ncx - hs - bx) / cell - ax) + ax) * cell + bx
        top = (xp.round((ncy - hs - by) / cell - ay) + ay) * cell + by
        snapped = xp.stack([left, top, left + sz, top + sz], -1)
        small = (side < _f32(thr[0] / spec.BOX_DLIB_LEVEL_RATIO))[:, None]  # below dlib's smallest box
        out = xp.where(small, out, snapped)
    out = out.to(boxes.dtype) if torch_in else out.astype(boxes.dtype, copy=False)
    if frame_hw is not None:
        if torch_in:
            out[:, 0:2] = out[:, 0:2].clamp(min=0)
            out[:, 2] = out[:, 2].clamp(max=float(frame_hw[1]))
            out[:, 3] = out[:, 3].clamp(max=float(frame_hw[0]))
        else:
            out[:, 0:2] = np.maximum(out[:, 0:2], 0)
            out[:, 2] = np.minimum(out[:, 2], frame_hw[1])
            out[:, 3] = np.minimum(out[:, 3], frame_hw[0])
    return out


def in_convention(boxes, box: str, frame_hw: Optional[Tuple[float, float]] = None, landmarks=None):
    """Boxes as the detector decoded them (with their landmarks) -> boxes in convention `box`
    (`seed` or `retinaface`). numpy or torch."""
    if check_box_convention(box) == spec.BOX_RETINAFACE:
        return boxes
    return to_seed_boxes(boxes, landmarks, frame_hw)
