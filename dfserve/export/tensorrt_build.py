"""TensorRT engines from the exported ONNX models (TensorRT Python API), checked against onnxruntime.

    dfserve export --tensorrt [--fp16] [--int8 --calib VIDEOS...] --models DIR

Optimisation profiles come from the spec (batch min/opt/max; the detector's height/width range), a
timing cache is kept beside the engines so rebuilds are fast, and INT8 calibration uses real face
crops cut from the user's videos by the embedded pipeline. TensorRT cannot be installed on CPU-only
machines: there `tensorrt` does not import, this module says so, and its tests skip.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from .. import spec
from .._lazy import require
from ..errors import ExportValidationError

log = logging.getLogger(__name__)
TIMING_CACHE = "tensorrt.timing.cache"


def _trt():
    return require("tensorrt", "tensorrt (NVIDIA's wheel, or NVIDIA's Triton/TensorRT container)", "gpu")


def _profile(builder, network, name: str):
    trt = _trt()
    prof = builder.create_optimization_profile()
    if name == spec.FRAME_CLASSIFIER.name:
        lo, opt, hi = spec.FRAME_CLASSIFIER.trt_batch_profile
        c = (3, spec.FACE_SIZE, spec.FACE_SIZE)
        prof.set_shape(spec.T.FACES, (lo, *c), (opt, *c), (hi, *c))
    else:
        lo, opt, hi = spec.FACE_DETECTOR.trt_batch_profile
        (h0, w0), (h1, w1), (h2, w2) = spec.FACE_DETECTOR.trt_hw_profile
        prof.set_shape(spec.T.IMAGES, (lo, 3, h0, w0), (opt, 3, h1, w1), (hi, 3, h2, w2))
    return prof



class FaceCalibrator:
    """INT8 entropy calibrator fed with real, normalised face crops (float32 [N,3,112,112]).

    Implicit quantization: deprecated since TensorRT 10.1 ("superseded by explicit quantization"),
    removed in 11 (build_engine says so before building)."""

    def __new__(cls, faces: np.ndarray, cache: Path, batch: int = 32):
        trt = _trt()
        import torch

        class _Calib(trt.IInt8EntropyCalibrator2):
            def __init__(self):
                super().__init__()
                self.faces, self.batch, self.cache, self.pos = faces, batch, cache, 0
                self.dev = torch.empty((batch, 3, spec.FACE_SIZE, spec.FACE_SIZE), device="cuda")

            def get_batch_size(self):
                return self.batch

            def get_batch(self, names):
                if self.pos + self.batch > len(self.faces):
                    return None
                self.dev.copy_(torch.from_numpy(self.faces[self.pos:self.pos + self.batch]))
                torch.cuda.current_stream().synchronize()  # TensorRT reads it on its own stream
                self.pos += self.batch
                return [int(self.dev.data_ptr())]

            def read_calibration_cache(self):
                return self.cache.read_bytes() if self.cache.is_file() else None

            def write_calibration_cache(self, data):
                self.cache.write_bytes(bytes(data))

        return _Calib()


def calibration_faces_from_videos(videos: Sequence[str], models_dir: Path, n: int = 512) -> np.ndarray:
    """Real face crops from the user's videos, cut by the embedded pipeline (detector + seed crop)."""
    from ..pipeline.decode import DecodeStats, find_videos, iter_frames, probe
    from ..pipeline.faces import classifier_input, crop_faces, locate_faces
    from ..pipeline.runtimes.ort import OnnxRuntime
    from ..pipeline.sampling import parse_policy

    rt = OnnxRuntime(models_dir)
    crops: List[np.ndarray] = []
    for path in find_videos(videos):
        info = probe(path)
        for _, frames in iter_frames(path, parse_policy("fps:2"), info, DecodeStats()):
            faces = locate_faces(rt.detect, frames)
            keep = [(f, d) for f, d in zip(frames, faces) if d is not None]
            if keep:
                crops.extend(crop_faces([f for f, _ in keep], [d.box for _, d in keep]))
            if len(crops) >= n:
                return classifier_input(np.stack(crops[:n]))
    if not crops:
        raise ExportValidationError(f"no face found in the calibration videos {list(videos)}")
    return classifier_input(np.stack(crops))


def build_engine(onnx_path: Path, plan_path: Path, name: str, fp16: bool = False, int8_faces: Optional[np.ndarray] = None,
                 workspace_gb: float = 4.0) -> Path:
    trt = _trt()
    # Precision flags first, so a TensorRT that cannot do what was asked fails before a long build.
    # TensorRT 11 builds strongly typed networks only: BuilderFlag.FP16/INT8 and the INT8 calibrators
    # are gone; precision comes from the ONNX's own types (a mixed-precision or QDQ ONNX).
    if fp16 and not hasattr(trt.BuilderFlag, "FP16"):
        raise ExportValidationError(f"TensorRT {trt.__version__} has no FP16 builder flag (strongly typed networks "
                                    "only, TensorRT >= 11): build without --fp16, or use TensorRT 10.x "
                                    "(e.g. the tritonserver 24.xx-25.xx containers)")
    if int8_faces is not None and not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise ExportValidationError(f"TensorRT {trt.__version__} has no implicit INT8 calibration (removed in "
                                    "TensorRT 11; quantize the ONNX explicitly with Q/DQ nodes instead)")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # 0: TensorRT 10 networks are always explicit-batch (NetworkDefinitionCreationFlag.EXPLICIT_BATCH is
    # deprecated and ignored), so no flag is needed.
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from the file: external weights resolve beside it
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportValidationError(f"{onnx_path}: TensorRT cannot parse it: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    cache_path = plan_path.parent / TIMING_CACHE
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):  # made on another GPU/version: start afresh
        log.warning("%s does not match this GPU or TensorRT; starting a new timing cache", cache_path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    config.add_optimization_profile(_profile(builder, network, name))
    if int8_faces is not None:  # implicit quantization: deprecated since TensorRT 10.1, still works in 10.x
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = FaceCalibrator(int8_faces, plan_path.with_suffix(".calib"))
        config.set_calibration_profile(_profile(builder, network, name))
    t = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportValidationError(f"TensorRT failed to build an engine from {onnx_path}")
    plan_path.write_bytes(bytes(serialized))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    log.info("built %s in %.1f s", plan_path, time.perf_counter() - t)
    return plan_path


def run_engine(plan_path: Path, inputs: dict) -> dict:
    """Run an engine once (torch CUDA tensors as I/O buffers, the TensorRT 10 name-based API:
    set_input_shape / set_tensor_address / execute_async_v3; the binding-index API is gone)."""
    trt = _trt()
    import torch

    dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
              trt.int64: torch.int64, trt.int8: torch.int8, trt.uint8: torch.uint8, trt.bool: torch.bool}
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())
    if engine is None:
        raise ExportValidationError(f"{plan_path}: TensorRT could not deserialize this engine (built by another "
                                    "TensorRT version or for another GPU?)")
    ctx = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
    bufs = {}
    for name in (n for n in names if is_input[n]):
        want = dtypes[engine.get_tensor_dtype(name)]
        t = torch.from_numpy(np.ascontiguousarray(inputs[name])).to("cuda", want)
        ctx.set_input_shape(name, tuple(t.shape))
        bufs[name] = t
    for name in (n for n in names if not is_input[n]):
        bufs[name] = torch.empty(tuple(ctx.get_tensor_shape(name)), device="cuda",
                                 dtype=dtypes[engine.get_tensor_dtype(name)])
    for name, t in bufs.items():
        ctx.set_tensor_address(name, int(t.data_ptr()))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())  # the uploads above ran on the current stream
    if not ctx.execute_async_v3(stream.cuda_stream):
        raise ExportValidationError(f"{plan_path}: execute_async_v3 failed")
    stream.synchronize()
    return {k: v.float().cpu().numpy() for k, v in bufs.items() if not is_input[k]}


def build_engines(models_dir: str | Path, fp16: bool = False, int8: bool = False, calib: Sequence[str] = (),
                  tolerance: Optional[float] = None) -> dict:
    """Build frame_classifier.plan and face_detector.plan; check each against onnxruntime."""
    from ..pipeline.runtimes.ort import OnnxRuntime
    from ..samples import astronaut_bgr, astronaut_face_crops, normalize_faces

    models_dir = Path(models_dir)
    faces_int8 = calibration_faces_from_videos(calib, models_dir) if int8 else None
    report = {}
    for name, onnx_name in ((spec.FRAME_CLASSIFIER.name, spec.CLASSIFIER_ONNX),
                            (spec.FACE_DETECTOR.name, spec.DETECTOR_ONNX)):
        plan = models_dir / onnx_name.replace(".onnx", ".plan")
        build_engine(models_dir / onnx_name, plan, name, fp16=fp16,
                     int8_faces=faces_int8 if name == spec.FRAME_CLASSIFIER.name else None)
        report[name] = {"plan": str(plan), "bytes": plan.stat().st_size}
    ort = OnnxRuntime(models_dir)
    faces = normalize_faces(astronaut_face_crops(32, seed=3))
    got = run_engine(models_dir / spec.CLASSIFIER_ONNX.replace(".onnx", ".plan"), {spec.T.FACES: faces})[spec.T.LOGITS]
    err = float(np.abs(got - ort.classify(faces)).max())
    tol = tolerance or (0.5 if int8 else 5e-2 if fp16 else spec.TOL_CLASSIFIER_LOGITS)
    report["frame_classifier"]["max_abs_logit_error_vs_onnxruntime"] = err
    if err > tol:
        raise ExportValidationError(f"TensorRT classifier differs from onnxruntime by {err:.3g} (tolerance {tol})")
    img = np.ascontiguousarray(astronaut_bgr().astype(np.float32).transpose(2, 0, 1)[None])
    d = run_engine(models_dir / spec.DETECTOR_ONNX.replace(".onnx", ".plan"), {spec.T.IMAGES: img})
    loc, scores, _ = ort.detect(img)
    derr = float(np.abs(d[spec.T.SCORES] - scores).max())
    report["face_detector"]["max_abs_score_error_vs_onnxruntime"] = derr
    if derr > (5e-2 if fp16 else 1e-3):
        raise ExportValidationError(f"TensorRT detector differs from onnxruntime by {derr:.3g} in face score")
    return report
