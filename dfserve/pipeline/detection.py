"""RetinaFace post-processing as plain functions: anchors, box decoding, NMS, face choice.

Written against the operations numpy arrays and torch tensors share (arithmetic, indexing,
`exp` through the array's own namespace), so the CPU path (numpy) and the GPU path (torch on
CUDA) decode boxes identically. Coordinates are x1, y1, x2, y2 in the detector input's pixels.
After NMS, the kept boxes are scaled to frame pixels and put in the requested box convention
(`box_convention`: the seed's dlib framing by default, predicted from the box and the five landmarks the
detector decodes beside it): what the crops, the tracker and the timeline use.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import List, Sequence

import numpy as np

from .. import spec
from .box_convention import in_convention


@lru_cache(maxsize=64)
def anchors(height: int, width: int) -> np.ndarray:
    """Prior boxes (cx, cy, w, h), normalised to the input size, in the network's output order."""
    out = []
    for stride, sizes in zip(spec.DETECTOR_STRIDES, spec.DETECTOR_ANCHOR_SIZES):
        ny, nx = math.ceil(height / stride), math.ceil(width / stride)
        yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        cx = (xx.reshape(-1) + 0.5) * stride / width
        cy = (yy.reshape(-1) + 0.5) * stride / height
        for_pos = []
        for s in sizes:
            for_pos.append(np.stack([cx, cy, np.full_like(cx, s / width), np.full_like(cy, s / height)], 1))
        out.append(np.stack(for_pos, 1).reshape(-1, 4))  # (position, anchor) order
    res = np.concatenate(out).astype(np.float32)
    res.setflags(write=False)
    return res


def _exp(a):
    return a.exp() if hasattr(a, "exp") else np.exp(a)


def decode_boxes(loc, priors, height: int, width: int):
    """loc [..., N, 4] offsets -> boxes [..., N, 4] as x1, y1, x2, y2 pixels. numpy or torch."""
    vc, vs = spec.DETECTOR_VARIANCE
    cxcy = priors[..., :2] + loc[..., :2] * vc * priors[..., 2:]
    wh = priors[..., 2:] * _exp(loc[..., 2:] * vs)
    x1y1 = cxcy - wh / 2
    scale = [width, height]
    if hasattr(loc, "new_tensor"):
        scale = loc.new_tensor(scale)
        import torch

        return torch.cat([x1y1 * scale, (x1y1 + wh) * scale], -1)
    scale = np.asarray(scale, dtype=loc.dtype)
    return np.concatenate([x1y1 * scale, (x1y1 + wh) * scale], -1)


def decode_landmarks(lm, priors, height: int, width: int):
    """lm [N, 10] offsets -> landmarks [N, 10] as x, y pixels of the five points (left eye, right eye, nose,
    left and right mouth corners). numpy or torch, the same operations in the same order."""
    vc = spec.DETECTOR_VARIANCE[0]
    n = lm.shape[0]
    pri = priors.reshape(n, 1, 4)
    pts = pri[..., :2] + lm.reshape(n, 5, 2) * vc * pri[..., 2:]
    scale = lm.new_tensor([width, height]) if hasattr(lm, "new_tensor") else np.asarray([width, height], dtype=lm.dtype)
    return (pts * scale).reshape(n, 10)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = spec.DETECTOR_NMS_IOU) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices in descending score order."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        ious = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[ious <= iou]
    return np.asarray(keep, dtype=np.int64)


@dataclass
class Detection:
    box: np.ndarray  # [4] x1, y1, x2, y2 (float, frame pixels)
    score: float

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))


def detections(loc: np.ndarray, scores: np.ndarray, height: int, width: int,
               threshold: float = spec.DETECTOR_SCORE_THRESHOLD, iou: float = spec.DETECTOR_NMS_IOU,
               scale: float = 1.0, box: str = spec.DEFAULT_BOX, landmarks=None) -> List[List[Detection]]:
    """Batch of raw detector outputs (loc [B,A,4], scores [B,A], landmarks [B,A,10]: the seed convention needs
    them) -> per-image lists of faces (boxes scaled by 1/scale, in convention `box`)."""
    pri = anchors(height, width)
    out = []
    for b in range(loc.shape[0]):
        sel = np.nonzero(scores[b] > threshold)[0]
        if sel.size == 0:
            out.append([])
            continue
        boxes = decode_boxes(loc[b, sel], pri[sel], height, width)
        keep = nms(boxes, scores[b, sel], iou)
        pts = None
        if landmarks is not None:
            pts = decode_landmarks(landmarks[b, sel[keep]], pri[sel[keep]], height, width) / scale
        kept = in_convention(boxes[keep] / scale, box, frame_hw=(height / scale, width / scale), landmarks=pts)
        out.append([Detection(kb, float(scores[b, sel[k]])) for kb, k in zip(kept, keep)])
    return out


def choose_face(faces: Sequence[Detection], min_size: float = spec.DETECTOR_MIN_FACE):
    """The largest confident face (ties: higher score), or None."""
    ok = [f for f in faces if min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= min_size]
    if not ok:
        return None
    return max(ok, key=lambda f: (f.area, f.score))


def all_faces(faces: Sequence[Detection], min_size: float = spec.DETECTOR_MIN_FACE,
              limit: int = spec.MAX_FACES_PER_FRAME) -> List[Detection]:
    """Every confident face at least `min_size` pixels on its shorter side, largest first, at most `limit`."""
    ok = [f for f in faces if min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= min_size]
    return sorted(ok, key=lambda f: (-f.area, -f.score))[:limit]
