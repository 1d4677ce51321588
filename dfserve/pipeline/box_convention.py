"""Face boxes in the seed's convention: RetinaFace's boxes mapped to the box dlib's HOG detector draws.

The seed's checkpoints learned faces framed by `face_recognition.face_locations` (dlib HOG); RetinaFace
frames them taller and higher. `to_seed_boxes` moves each box's centre and scales its sides by the
fitted constants of `spec.BOX_SEED_CENTER_SHIFT` / `spec.BOX_SEED_SIZE_RATIO` (see spec.py and
benchmarks/fit_box_mapping.py) and trims it to the frame as face_recognition does. It is applied where
boxes are decoded (after NMS), so every path — CPU, torch/GPU, Triton, the tracker, the timeline —
crops and reports the same boxes.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .. import spec
from ..errors import UsageError


def check_box_convention(box: str) -> str:
    if box not in spec.BOX_CONVENTIONS:
        raise UsageError(f"--box must be one of {', '.join(spec.BOX_CONVENTIONS)}, got {box!r}")
    return box


def to_seed_boxes(boxes: np.ndarray, frame_hw: Optional[Tuple[float, float]] = None) -> np.ndarray:
    """RetinaFace boxes [N,4] (x1, y1, x2, y2, frame pixels) -> dlib-convention boxes [N,4] (same dtype),
    trimmed to a frame of `frame_hw` = (height, width) when given."""
    b = np.asarray(boxes)
    w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    (sx, sy), (rw, rh) = spec.BOX_SEED_CENTER_SHIFT, spec.BOX_SEED_SIZE_RATIO
    cx = (b[..., 0] + b[..., 2]) / 2 + sx * w
    cy = (b[..., 1] + b[..., 3]) / 2 + sy * h
    nw, nh = rw * w, rh * h
    out = np.stack([cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2], -1).astype(b.dtype, copy=False)
    if frame_hw is not None:
        out[..., 0:2] = np.maximum(out[..., 0:2], 0)
        out[..., 2] = np.minimum(out[..., 2], frame_hw[1])
        out[..., 3] = np.minimum(out[..., 3], frame_hw[0])
    return out


def in_convention(boxes: np.ndarray, box: str, frame_hw: Optional[Tuple[float, float]] = None) -> np.ndarray:
    """Boxes as the detector decoded them -> boxes in convention `box` (`seed` or `retinaface`)."""
    if check_box_convention(box) == spec.BOX_RETINAFACE:
        return boxes
    return to_seed_boxes(boxes, frame_hw)
