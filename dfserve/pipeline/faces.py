"""Face location and cropping on the CPU (numpy + PIL), per the seed's contract.

Detection runs on frames downscaled so their longer side is at most `max_side` (the detector
is run batched on all frames of a chunk); boxes are mapped back to full-resolution pixels, in the
seed's dlib framing by default (`box_convention`). The
largest confident face is chosen and cropped `frame[top:bottom, left:right]` with no padding
(the seed's), or with `margin` x box size added on each side when asked, then resized to 112x112
(PIL bilinear, antialiased) and normalised with the ImageNet statistics, channel order BGR.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from .. import spec
from ..contract import normalize_faces, resize_bgr
from ..resize import downscale_whole
from .detection import Detection, all_faces, choose_face, detections


def detector_size(height: int, width: int, max_side: int = spec.DETECTOR_MAX_SIDE) -> Tuple[int, int, float]:
    """(h, w, scale): the detector input size for a frame, longer side at most max_side (never enlarged)."""
    s = max(height, width)
    if s <= max_side:
        return height, width, 1.0
    scale = max_side / s
    return max(1, int(round(height * scale))), max(1, int(round(width * scale))), scale


def detector_input(frames: Sequence[np.ndarray], max_side: int = spec.DETECTOR_MAX_SIDE,
                   dtype=np.float32) -> Tuple[np.ndarray, float]:
    """Frames (same size) -> [B,3,h,w] BGR 0..255 at reduced size (float32, the detector's input; uint8 to
    queue it at a quarter of the memory and convert later, with the same values), and the scale used."""
    h, w, scale = detector_size(frames[0].shape[0], frames[0].shape[1], max_side)
    if scale < 1.0:
        small = [downscale_frame(f, h, w) for f in frames]
    else:
        small = list(frames)
    # transpose while still uint8, then one conversion copy (7x cheaper than converting first)
    x = np.ascontiguousarray(np.stack(small).transpose(0, 3, 1, 2))
    return (x if x.dtype == dtype else x.astype(dtype)), scale


def downscale_frame(frame: np.ndarray, h: int, w: int) -> np.ndarray:
    """One frame -> its detector-sized copy (uint8 [h,w,3]): the resize definition of `dfserve.resize` (Pillow's
    antialiased bilinear, horizontal pass first, as the torch path's `frames_to_detector`). Frames that shrink
    by whole factors (720p, 1080p, 1440p -> 640x360) take its OpenCV form (`resize.downscale_whole`: the
    same bytes, ~2.5x faster); other sizes Pillow's C resize, which gives the same bytes for these
    aspect-kept downscales (tests/test_device_faces.py) and is faster than the numpy version there."""
    small = downscale_whole(frame, (h, w))
    if small is not None:
        return small
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(frame)).resize((w, h), Image.BILINEAR))


def choose_faces(loc: np.ndarray, scores: np.ndarray, height: int, width: int, scale: float,
                 threshold: float = spec.DETECTOR_SCORE_THRESHOLD, box: str = spec.DEFAULT_BOX,
                 landmarks: Optional[np.ndarray] = None) -> List[Optional[Detection]]:
    """Raw detector outputs for a batch (input size height x width) -> the chosen face of each image."""
    return [choose_face(f) for f in detections(loc, scores, height, width, threshold=threshold, scale=scale, box=box,
                                               landmarks=landmarks)]


def faces_per_frame(loc: np.ndarray, scores: np.ndarray, height: int, width: int, scale: float,
                    threshold: float = spec.DETECTOR_SCORE_THRESHOLD, mode: str = "largest",
                    min_face: float = spec.DETECTOR_MIN_FACE, box: str = spec.DEFAULT_BOX,
                    landmarks: Optional[np.ndarray] = None) -> List[List[Detection]]:
    """Raw detector outputs -> the faces scored in each image: the largest one (`largest`) or all (`all`),
    boxes in convention `box` (the seed's dlib framing by default: it needs the detector's `landmarks`)."""
    dets = detections(loc, scores, height, width, threshold=threshold, scale=scale, box=box, landmarks=landmarks)
    if mode == "all":
        return [all_faces(f, min_face) for f in dets]
    return [[c] if (c := choose_face(f, min_face)) is not None else [] for f in dets]


def locate_faces(detect_fn, frames: Sequence[np.ndarray], max_side: int = spec.DETECTOR_MAX_SIDE,
                 threshold: float = spec.DETECTOR_SCORE_THRESHOLD, box: str = spec.DEFAULT_BOX) -> List[Optional[Detection]]:
    """Run `detect_fn(images) -> (loc, scores, landmarks)` on frames of one size; one chosen face (or None) each."""
    x, scale = detector_input(frames, max_side)
    loc, scores, lm = detect_fn(x)
    return choose_faces(loc, scores, x.shape[2], x.shape[3], scale, threshold, box, lm)


def crop_box(box: np.ndarray, height: int, width: int, margin: float = 0.0) -> Tuple[int, int, int, int]:
    """Integer (top, bottom, left, right) of a face box, clipped to the frame, with optional margin."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    if margin:
        mw, mh = (x2 - x1) * margin, (y2 - y1) * margin
        x1, y1, x2, y2 = x1 - mw, y1 - mh, x2 + mw, y2 + mh
    left, top = max(0, int(round(x1))), max(0, int(round(y1)))
    right, bottom = min(width, int(round(x2))), min(height, int(round(y2)))
    if right - left < 2 or bottom - top < 2:
        return 0, height, 0, width
    return top, bottom, left, right


def crop_faces(frames: Sequence[np.ndarray], boxes: Sequence[Optional[np.ndarray]], margin: float = 0.0) -> np.ndarray:
    """uint8 [N,112,112,3] BGR crops; a None box means the whole frame."""
    out = np.empty((len(frames), spec.FACE_SIZE, spec.FACE_SIZE, 3), np.uint8)
    for k, (f, b) in enumerate(zip(frames, boxes)):
        if b is None:
            out[k] = resize_bgr(f)
        else:
            t, btm, l, r = crop_box(b, f.shape[0], f.shape[1], margin)
            out[k] = resize_bgr(f[t:btm, l:r])
    return out


def classifier_input(crops_uint8: np.ndarray) -> np.ndarray:
    """uint8 [N,112,112,3] BGR -> float32 [N,3,112,112] normalised (the classifier's `faces`)."""
    return normalize_faces(crops_uint8)


def faces_for_classifier(frames: Sequence[np.ndarray], faces: Sequence[Optional[Detection]], margin: float = 0.0):
    """Every frame -> (faces float32 [N,3,112,112], boxes float32 [N,4], has_face bool [N]).

    A frame without a face is cropped whole (the seed's fallback); `has_face` tells the caller.
    """
    boxes = [f.box if f is not None else None for f in faces]
    crops = crop_faces(frames, boxes, margin)
    box_arr = np.zeros((len(frames), 4), np.float32)
    for k, b in enumerate(boxes):
        if b is not None:
            box_arr[k] = b
    has = np.array([b is not None for b in boxes], dtype=bool)
    return classifier_input(crops), box_arr, has
