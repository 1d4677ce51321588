"""Pluggable runtimes for the two networks. `OnnxRuntime` is the embedded CPU one.

A runtime has `classify(faces float32 [B,3,112,112]) -> logits [B,2]` and
`detect(images float32 [B,3,H,W] BGR 0..255) -> (loc [B,A,4], scores [B,A])`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from .. import spec

log = logging.getLogger(__name__)


class OnnxRuntime:
    name = "onnxruntime-cpu"

    def __init__(self, models_dir: str | Path, threads: int | None = None,
                 classifier_batch: int = spec.DEFAULT_CLASSIFIER_BATCH):
        import onnxruntime as ort

        models_dir = Path(models_dir)
        threads = threads or os.cpu_count() or 1
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        self._cls = ort.InferenceSession(str(models_dir / spec.CLASSIFIER_ONNX), so, providers=providers)
        self._det = ort.InferenceSession(str(models_dir / spec.DETECTOR_ONNX), so, providers=providers)
        self.classifier_batch = classifier_batch
        from ..models import model_id_from_metadata, read_metadata

        self.model_id = model_id_from_metadata(read_metadata(models_dir))
        self._cin = spec.FRAME_CLASSIFIER.inputs[0].name
        self._din = spec.FACE_DETECTOR.inputs[0].name
        self._dout = [spec.FACE_DETECTOR.outputs[0].name, spec.FACE_DETECTOR.outputs[1].name]

    def classify(self, faces: np.ndarray) -> np.ndarray:
        if faces.shape[0] == 0:
            return np.zeros((0, spec.NUM_CLASSES), np.float32)
        b = self.classifier_batch
        outs = [self._cls.run(None, {self._cin: faces[i:i + b]})[0] for i in range(0, faces.shape[0], b)]
        return np.concatenate(outs)

    def detect(self, images: np.ndarray):
        loc, scores = self._det.run(self._dout, {self._din: images})
        return loc, scores
