"""`--detector dlib`: the engine with the seed's own face finder instead of RetinaFace.

Each sampled frame, full size and BGR as decoded, goes to dlib's HOG detector exactly as the seed's
`face_recognition.face_locations(frame)` call did (`dlib_faces`); the first face in dlib's order is
cropped `frame[top:bottom, left:right]`. Everything else (decode, crop resize, classifier, verdict) is
the engine's. CPU only and one frame at a time, so about the seed's speed; for users who need the
seed's verdicts to the last digit. Use `--no-face frame` for the seed's whole-frame fallback.
"""
from __future__ import annotations

from typing import List

from .detection import Detection
from .dlib_faces import css_to_box, dlib_face_locations
from .engine import Scorer


class DlibScorer(Scorer):
    """The engine's Scorer with dlib HOG (upsample 1, first face) as the detector."""

    def __init__(self, runtime, options, model_id=None, on_progress=None):
        super().__init__(runtime, options, model_id, on_progress)
        self.find = dlib_face_locations()

    def detector_prep(self, frames):
        return None  # dlib runs on the full-size frames, in locate()

    def locate(self, frames, prep=None) -> List[List[Detection]]:
        out = []
        for f in frames:
            found = self.find(f)
            out.append([Detection(css_to_box(found[0]), 1.0)] if found else [])
        return out
