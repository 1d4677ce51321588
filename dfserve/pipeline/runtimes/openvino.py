"""OpenVINO CPU runtime: the same interface as `OnnxRuntime` (`classify`, `detect`, `name`, `model_id`).

It reads the exported ONNX files (the int8 variant `frame_classifier.int8.onnx` for `precision="int8"`)
and compiles them for the CPU plugin with the threads of the machine. `precision` chooses:

- ``fp32``: `INFERENCE_PRECISION_HINT=f32` on both networks (exact: parity with onnxruntime <= 1e-4 in p_fake);
- ``bf16``: the fp32 graphs with `INFERENCE_PRECISION_HINT=bf16` (AVX512_BF16 / AMX CPUs; elsewhere OpenVINO
  emulates or falls back to f32);
- ``int8``: the post-training quantized classifier (QDQ ONNX, see `dfserve.export.precision`), the detector in bf16.

Compiled blobs are cached in `$DFSERVE_CACHE/openvino` (OpenVINO's `CACHE_DIR`), so the second start is fast.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ... import spec
from ..._lazy import require
from ...errors import ModelFilesError, UsageError
from ..precisions import PRECISIONS

log = logging.getLogger(__name__)


def _hint(precision: str) -> str:
    return "f32" if precision == "fp32" else "bf16"


def _cache_dir() -> str | None:
    """<cache root>/openvino, where it can be written (model_files.cache_root)."""
    from ..model_files import cache_root

    d = cache_root() / "openvino"
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return str(d) if os.access(d, os.W_OK) else None


def compile_onnx(path: str | Path, precision: str = "fp32", threads: int | None = None,
                 static_shape=None, cache: bool = True, core=None):
    """Compile one ONNX (or IR) file for the CPU plugin: latency hint (one stream, all threads, not pinned)."""
    ov = require("openvino", extra="openvino")
    if precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    core = core or ov.Core()
    model = core.read_model(str(path))
    if static_shape is not None:
        model.reshape({model.inputs[0].get_any_name(): ov.PartialShape(list(static_shape))})
    cfg = {"INFERENCE_NUM_THREADS": int(threads or os.cpu_count() or 1), "PERFORMANCE_HINT": "LATENCY",
           "INFERENCE_PRECISION_HINT": _hint(precision),
           # threads not pinned to cores: the engine's decode threads and the other network share those cores
           # (measured on 2 cores, 720p --sample all, fp32: 32 -> 36 frames/s with pinning off)
           "ENABLE_CPU_PINNING": False}
    if cache:
        cd = _cache_dir()
        if cd:
            cfg["CACHE_DIR"] = cd
    return core.compile_model(model, "CPU", cfg)


class OpenVinoRuntime:
    """`classify(faces [B,3,112,112]) -> logits [B,2]`, `detect(images [B,3,H,W]) -> (loc, scores)` in OpenVINO.

    The classifier keeps a dynamic batch (one compiled model serves every batch size; OpenVINO's CPU plugin
    caches per-shape kernels), calls are cut into `classifier_batch` slices. The detector keeps dynamic
    batch/height/width: the engine feeds one size per video resolution.
    """

    name = "openvino"
    tensors = False

    def __init__(self, models_dir: str | Path, threads: int | None = None,
                 classifier_batch: int = spec.DEFAULT_CLASSIFIER_BATCH, precision: str = "fp32"):
        from ..model_files import model_id_from_metadata, read_metadata
        from ..precisions import classifier_file

        models_dir = Path(models_dir)
        if precision not in PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.model_id = model_id_from_metadata(read_metadata(models_dir))
        self.precision = precision
        self.detector_precision = "fp32" if precision == "fp32" else "bf16"
        from .ort import default_threads, model_threads

        self.threads = int(threads or default_threads())
        # the detector (locate thread) and the classifier (calling thread) run at the same time; threads per
        # network from model_threads (on 2 cores the cheaper network gets one: docs/cpu-speed.md section 1)
        self.detector_threads, self.classifier_threads = model_threads(self.threads, precision)
        self.classifier_batch = classifier_batch
        cls_path = classifier_file(models_dir, precision)
        if not cls_path.is_file():
            raise ModelFilesError(f"{models_dir}: no {cls_path.name} for --precision {precision}; create it with "
                                  f"`dfserve export ... --precision {precision} --out {models_dir}`")
        ov = require("openvino", extra="openvino")
        core = ov.Core()
        self._cls = compile_onnx(cls_path, precision, self.classifier_threads, core=core)
        self._det = compile_onnx(models_dir / spec.DETECTOR_ONNX, self.detector_precision, self.detector_threads,
                                 core=core)
        self._cls_req = self._cls.create_infer_request()
        self._det_req = self._det.create_infer_request()
        self._cout = self._cls.output(spec.FRAME_CLASSIFIER.outputs[0].name)
        self._dloc = self._det.output(spec.FACE_DETECTOR.outputs[0].name)
        self._dscore = self._det.output(spec.FACE_DETECTOR.outputs[1].name)
        self._dlm = self._det.output(spec.FACE_DETECTOR.outputs[2].name)

    def classify(self, faces: np.ndarray) -> np.ndarray:
        if faces.shape[0] == 0:
            return np.zeros((0, spec.NUM_CLASSES), np.float32)
        b = self.classifier_batch
        outs = []
        for i in range(0, faces.shape[0], b):
            x = np.ascontiguousarray(faces[i:i + b], dtype=np.float32)
            res = self._cls_req.infer([x])
            outs.append(np.array(res[self._cout], dtype=np.float32, copy=True))
        return np.concatenate(outs)

    def detect(self, images: np.ndarray):
        res = self._det_req.infer([np.ascontiguousarray(images, dtype=np.float32)])
        return (np.array(res[self._dloc], dtype=np.float32, copy=True),
                np.array(res[self._dscore], dtype=np.float32, copy=True),
                np.array(res[self._dlm], dtype=np.float32, copy=True))
