"""The runtime seam: what every inference backend provides, and the onnxruntime one.

A runtime is any object with

    name: str                      e.g. "onnxruntime", "openvino", "torch"
    model_id: str                  what result rows call the model (checkpoint sha256)
    tensors: bool                  True if it works on torch tensors on its `device` (the torch runtime);
                                   the engine then keeps frames on that device (TorchScorer)
    classify(faces)  -> logits     faces float32 [B,3,112,112] (BGR, ImageNet-normalised) -> [B,2]
    detect(images)   -> (loc, scores)   images float32 [B,3,h,w] BGR 0..255 -> [B,A,4], [B,A]

The engine (`Scorer`), the Triton python models and the bench only call these. Runtimes are built
by name through `dfserve.models.load_runtime`; adding one is a module here plus one entry there.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol, Tuple, Union, runtime_checkable

import numpy as np

from ... import spec
from ..model_files import model_id_from_metadata, read_metadata

log = logging.getLogger(__name__)


@runtime_checkable
class Runtime(Protocol):
    name: str
    model_id: str
    tensors: bool

    def classify(self, faces) -> np.ndarray: ...

    def detect(self, images) -> Tuple[np.ndarray, np.ndarray, np.ndarray]: ...  # loc, scores, landmarks


def default_threads() -> int:
    """CPU threads a runtime uses by default: the cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


MODEL_THREADS_ENV = "DFSERVE_MODEL_THREADS"


# The network that costs more CPU per frame on OpenVINO, per --precision (720p, 2-core AMD EPYC, stage costs of
# `dfserve bench --runtimes`: fp32 classifier 26.3 ms vs detector 18.8; bf16 classifier 11.6 vs detector 8.4; int8
# detector 8.4 (it stays bf16) vs classifier 6.0)
DEARER_NETWORK = {"fp32": "classifier", "bf16": "classifier", "int8": "detector"}


def model_threads(cores: int | None = None, precision: str = "fp32") -> Tuple[int, int]:
    """(detector threads, classifier threads) for a CPU runtime whose two networks run at the same time (the
    engine's locate thread runs the detector while the calling thread classifies: engine.py), so their times
    overlap instead of adding up.

    On 2 cores, the network that costs less per frame (DEARER_NETWORK names the other) gets one thread and the
    dearer one both: interleaved A/B on a 2-core AMD EPYC, 10-s 720p, `--sample all` (benchmarks/cpu_overlap.py,
    docs/cpu-speed.md section 1): fp32 41.2 vs 40.0 frames/s with every core each (5 rounds, ahead in 4, tied
    in 1), bf16 69.9 vs 67.5 (3 of 3), int8 84.7 vs 82.5 (8 rounds, ahead in 7); the other way round loses
    (fp32 34.5, bf16 61.8), and one thread each loses too (fp32 35.9, int8 79.1). Elsewhere every core for each
    network (not measured on more cores; on the 2-core Xeon the split 1 + 1 lost to it).
    `$DFSERVE_MODEL_THREADS`: "D,C" (e.g. "1,1") or "all".
    """
    cores = int(cores or default_threads())
    env = os.environ.get(MODEL_THREADS_ENV, "").strip()
    if env and env != "all":
        try:
            d, c = (int(v) for v in env.split(","))
        except ValueError:
            from ...errors import UsageError

            raise UsageError(f"${MODEL_THREADS_ENV} must be 'D,C' (two thread counts) or 'all', got {env!r}") from None
        return max(1, d), max(1, c)
    if cores == 2 and env != "all":
        return (2, 1) if DEARER_NETWORK.get(precision, "classifier") == "detector" else (1, 2)
    return cores, cores


def ort_session(model: Union[str, Path, bytes], threads: int | None = None, mem_pattern: bool = True):
    """The one place an onnxruntime CPU session is built (the engine, Triton models, export checks, bench).

    mem_pattern=False: no memory-pattern planning (one cached plan and one block the size of the whole run's
    tensors per input shape); tensors then reuse the arena's free chunks. Same speed on our models (interleaved
    A/B on the Triton shapes, 2 cores), lower peaks for servers that see many batch shapes. The CPU arena itself
    stays on: without it the detector ran 1.6-2.2x slower (every run's buffers page-faulted in anew).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or default_threads()
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # no busy-waiting between runs: the engine's decode and locate threads need those cycles (measured on
    # 2 cores, 720p --sample all: 31 -> 35 frames/s; benchmarks/results/*/cpu_runtimes.json)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.enable_mem_pattern = mem_pattern
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


_ORT_FLOAT = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
              "tensor(int64)": np.int64}


def shrink_arena(sess) -> None:
    """Hand onnxruntime's CPU arena back to malloc: a minimal run (batch 1, free dimensions 64) whose run options
    shrink the arena afterwards, freeing every arena region no tensor is using (an idle server's arena otherwise
    keeps the largest batch's memory for good). About 30 ms for the detector on 2 cores."""
    import onnxruntime as ort

    ro = ort.RunOptions()
    ro.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else (1 if n == 0 else 64) for n, d in enumerate(i.shape)]
        feeds[i.name] = np.zeros(shape, _ORT_FLOAT.get(i.type, np.float32))
    sess.run(None, feeds, ro)


class OnnxRuntime:
    """onnxruntime on the CPU: the exported ONNX files of a `dfserve export` folder."""

    name = "onnxruntime"
    tensors = False

    def __init__(self, models_dir: str | Path, threads: int | None = None,
                 classifier_batch: int = spec.DEFAULT_CLASSIFIER_BATCH, precision: str = "fp32",
                 mem_pattern: bool = True):
        models_dir = Path(models_dir)
        self.precision = precision
        cls_file = _classifier_file(models_dir, precision)  # fp32 (default) or the int8 variant
        self.model_id = model_id_from_metadata(read_metadata(models_dir))
        self._cls = ort_session(cls_file, threads, mem_pattern=mem_pattern)  # False: servers (see ort_session)
        self._det = ort_session(models_dir / spec.DETECTOR_ONNX, threads, mem_pattern=mem_pattern)
        self.classifier_batch = classifier_batch
        self._cin = spec.FRAME_CLASSIFIER.inputs[0].name
        self._din = spec.FACE_DETECTOR.inputs[0].name
        self._dout = [o.name for o in spec.FACE_DETECTOR.outputs]  # loc, scores, landmarks

    def classify(self, faces: np.ndarray) -> np.ndarray:
        if faces.shape[0] == 0:
            return np.zeros((0, spec.NUM_CLASSES), np.float32)
        b = self.classifier_batch
        outs = [self._cls.run(None, {self._cin: faces[i:i + b]})[0] for i in range(0, faces.shape[0], b)]
        return np.concatenate(outs)

    def detect(self, images: np.ndarray):
        loc, scores, lm = self._det.run(self._dout, {self._din: images})
        return loc, scores, lm

    def release(self) -> None:
        """Give the memory onnxruntime's arenas keep after the largest batch back (servers call it when idle)."""
        shrink_arena(self._det)
        shrink_arena(self._cls)


def _classifier_file(models_dir: Path, precision: str) -> Path:
    """fp32: frame_classifier.onnx; int8: the QDQ variant written by `dfserve export --precision int8`."""
    from ...errors import ModelFilesError, UsageError
    from ..precisions import classifier_file

    if precision == "bf16":
        raise UsageError("--precision bf16 runs in OpenVINO only: use --runtime openvino (pip install "
                         "'dfserve[openvino]')")
    path = classifier_file(models_dir, precision)
    if not path.is_file():
        raise ModelFilesError(f"{models_dir}: no {path.name} for --precision {precision}; create it with "
                              f"`dfserve export --models {models_dir} --precision {precision}`")
    return path
