"""The seed pipeline, faithfully: what users run today, as the baseline of every benchmark.

OpenCV decode (BGR), `face_recognition.face_locations` on every frame — dlib's HOG detector with
one upsample, through the `dlib-bin` wheel, boxes trimmed to the frame exactly as face_recognition
does — the first face cropped `frame[top:bottom, left:right]` (the whole frame when none),
PIL resize to 112x112, ToTensor, Normalize, then the seed's eager fp32 forward over the first N
frames as one [1, N, 3, 112, 112] clip. One video at a time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, List, Optional

import numpy as np

from .._lazy import require
from ..export.reference import SeedReference
from ..pipeline.aggregate import Verdict
from ..pipeline.dlib_faces import dlib_face_locations


@dataclass
class SeedResult:
    path: str
    verdict: Optional[Verdict]
    frames: int
    faces_found: int
    seconds: float
    decode_s: float
    detect_s: float
    model_s: float
    error: Optional[str] = None


def opencv_frames(path: str):
    """The seed's frame_extract: cv2.VideoCapture, read until it fails, frames turned upright.

    The seed apps' OpenCV (4.5 to 4.10, and 4.12+) turns frames by the stream's display matrix by default;
    4.11.0, the last release for numpy<2, turned it off by mistake (opencv/opencv#26795): set it, so rotated
    phone clips reach the detector as the seed apps saw them."""
    cv2 = require("cv2", "opencv-python-headless<4.12", "bench")
    vid = cv2.VideoCapture(path)
    vid.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    try:
        ok = True
        while ok:
            ok, image = vid.read()
            if ok:
                yield image
    finally:
        vid.release()


class SeedPipeline:
    def __init__(self, reference: SeedReference, face_locations: Callable | None = None):
        self.ref = reference
        self.locate = face_locations or dlib_face_locations()

    def run(self, path: str, n_frames: int, head: str = "mean") -> SeedResult:
        t0 = time.perf_counter()
        decode_s = detect_s = 0.0
        frames: List[np.ndarray] = []
        faces_found = 0
        it = opencv_frames(path)
        while len(frames) < n_frames:
            td = time.perf_counter()
            frame = next(it, None)
            decode_s += time.perf_counter() - td
            if frame is None:
                break
            tf = time.perf_counter()
            faces = self.locate(frame)
            detect_s += time.perf_counter() - tf
            if faces:
                top, right, bottom, left = faces[0]
                frame = frame[top:bottom, left:right, :]
                faces_found += 1
            frames.append(frame)
        it.close()
        if not frames:
            return SeedResult(path, None, 0, 0, time.perf_counter() - t0, decode_s, detect_s, 0.0,
                              error="no frame decoded")
        tm = time.perf_counter()
        verdict = self.ref.predict_frames(frames, head)
        model_s = time.perf_counter() - tm
        return SeedResult(path, verdict, len(frames), faces_found, time.perf_counter() - t0, decode_s, detect_s,
                          model_s)
