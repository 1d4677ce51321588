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
                 classifier_batch: int = spec.DEFAULT_CLASSIFIER_BATCH, precision: str = "fp32"):
        import onnxruntime as ort

        models_dir = Path(models_dir)
        cls_file = _classifier_file(models_dir, precision)  # issue 11: fp32 (default) or the int8 variant
        self.precision = precision
        threads = threads or os.cpu_count() or 1
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        self._cls = ort.InferenceSession(str(cls_file), so, providers=providers)
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


def _classifier_file(models_dir: Path, precision: str) -> Path:
    """fp32: frame_classifier.onnx; int8: the QDQ variant written by `dfserve export --precision int8`."""
    from ..errors import ModelFilesError, UsageError
    from .precisions import classifier_file

    if precision == "bf16":
        raise UsageError("--precision bf16 runs in OpenVINO only: use --runtime openvino (pip install "
                         "'dfserve[openvino]')")
    path = classifier_file(models_dir, precision)
    if not path.is_file():
        raise ModelFilesError(f"{models_dir}: no {path.name} for --precision {precision}; create it with "
                              f"`dfserve export --models {models_dir} --precision {precision}`")
    return path
