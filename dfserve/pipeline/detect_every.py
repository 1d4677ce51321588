"""`--detect-every K`: detect faces on every K-th sampled frame and carry boxes to the frames between.

Opt-in speed for users who accept it knowingly (the default, K=1, keeps the seed's per-frame detection).
Within each decode chunk (consecutive sampled frames of one video) the detector runs on positions
0, K, 2K, ... and on the chunk's last frame; the frames between get a box linearly interpolated between the
two detections around them (a constant-velocity tracker), or the nearer detection's box when only one of
the two found a face. A frame is "without a face" only when both detections around it found none.
`box_disagreement` measures how often the carried box differs from per-frame detection.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from .. import spec
from .detection import Detection
from .engine import Scorer
from .faces import locate_faces


def carry_boxes(n: int, detected: dict) -> List[Optional[Detection]]:
    """detected: {position: Detection|None} for some positions of 0..n-1 (incl. 0 and n-1) -> one per position."""
    keys = sorted(detected)
    out: List[Optional[Detection]] = []
    for i in range(n):
        if i in detected:
            out.append(detected[i])
            continue
        lo = max(k for k in keys if k < i)
        hi = min(k for k in keys if k > i)
        a, b = detected[lo], detected[hi]
        if a is not None and b is not None:
            t = (i - lo) / (hi - lo)
            out.append(Detection(box=(1 - t) * np.asarray(a.box, np.float32) + t * np.asarray(b.box, np.float32),
                                 score=min(a.score, b.score)))
        elif a is not None or b is not None:
            out.append(a if (a is not None and (b is None or i - lo <= hi - i)) else b)
        else:
            out.append(None)
    return out


def locate_every(detect_fn, frames: Sequence[np.ndarray], every: int, max_side: int, threshold: float,
                 box: str = spec.DEFAULT_BOX):
    n = len(frames)
    if every <= 1 or n <= 2:
        return locate_faces(detect_fn, frames, max_side, threshold, box)
    pos = sorted(set(range(0, n, every)) | {n - 1})
    found = locate_faces(detect_fn, [frames[i] for i in pos], max_side, threshold, box)
    return carry_boxes(n, dict(zip(pos, found)))


class DetectEveryScorer(Scorer):
    """The engine's Scorer with detection on every K-th sampled frame (see module doc)."""

    def __init__(self, runtime, options, model_id=None, every: int = 1):
        super().__init__(runtime, options, model_id)
        self.every = int(every)

    def detector_prep(self, frames):
        return None  # the detector input is made for the detected positions only, in locate()

    def locate(self, frames, prep=None) -> list:
        found = locate_every(self.rt.detect, frames, self.every, self.opt.detect_max_side, self.opt.detect_threshold,
                             self.opt.box)
        return [[f] if f is not None else [] for f in found]


def _iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_disagreement(timeline_ref: list, timeline: list, iou: float = 0.5) -> dict:
    """How often a timeline's boxes differ from the per-frame detection's: face/no-face mismatch or IoU < `iou`."""
    ref = {t[0]: t[2] for t in timeline_ref}
    n = differ = 0
    ious = []
    for idx, _p, box in timeline:
        if idx not in ref:
            continue
        n += 1
        r = ref[idx]
        if (r is None) != (box is None):
            differ += 1
        elif r is not None:
            v = _iou(r, box)
            ious.append(v)
            differ += v < iou
    return {"frames": n, "differ": int(differ), "differ_fraction": differ / max(n, 1),
            "mean_iou": float(np.mean(ious)) if ious else None, "min_iou": float(np.min(ious)) if ious else None}
