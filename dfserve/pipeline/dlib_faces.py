"""The seed's face finder: `face_recognition.face_locations(img)` reproduced with dlib's HOG detector.

face_recognition (model "hog", number_of_times_to_upsample=1) calls
`dlib.get_frontal_face_detector()(img, 1)` and trims every rectangle to the image with
`_trim_css_to_bounds`: (max(top, 0), min(right, width), min(bottom, height), max(left, 0)). The seed
passes the frame exactly as OpenCV decoded it (BGR, uint8), takes the first face in dlib's order and
crops `frame[top:bottom, left:right]`. dlib comes from the `dlib-bin` wheel (no compiler needed).
"""
from __future__ import annotations

from typing import Callable, List, Tuple

import numpy as np

from .._lazy import require

DLIB_EXTRA = "dlib"  # the extra that installs dlib-bin (`pip install 'dfserve[dlib]'`; `bench` has it too)
UPSAMPLE = 1  # face_recognition.face_locations' default number_of_times_to_upsample


def dlib_face_locations() -> Callable[[np.ndarray], List[Tuple[int, int, int, int]]]:
    """A function img -> [(top, right, bottom, left), ...] equal to face_recognition.face_locations(img)."""
    dlib = require("dlib", "dlib-bin", DLIB_EXTRA)
    detector = dlib.get_frontal_face_detector()

    def locate(img: np.ndarray) -> List[Tuple[int, int, int, int]]:
        h, w = img.shape[:2]
        return [(max(r.top(), 0), min(r.right(), w), min(r.bottom(), h), max(r.left(), 0))
                for r in detector(np.ascontiguousarray(img), UPSAMPLE)]

    return locate


def css_to_box(css: Tuple[int, int, int, int]) -> np.ndarray:
    """face_recognition's (top, right, bottom, left) -> x1, y1, x2, y2 (float32), the crop
    `frame[y1:y2, x1:x2]` being the seed's `frame[top:bottom, left:right]`."""
    top, right, bottom, left = css
    return np.array([left, top, right, bottom], np.float32)
