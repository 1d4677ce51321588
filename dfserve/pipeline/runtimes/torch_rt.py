"""The PyTorch runtime: detector and classifier in torch, batched crop + resize on the device.

On CUDA (`dfserve score --device cuda`): fp16 weights, channels_last, CUDA graphs captured for the
common classifier batch sizes, frames kept on the GPU from NVDEC to the classifier. The same code
runs on the CPU in fp32, which is how CI verifies its logic against the onnxruntime path.

Interface, as every runtime: `detect(images [B,3,h,w] float BGR 0..255) -> (loc, scores)` and
`classify(faces [B,3,112,112]) -> logits [B,2]`, plus the device-side helpers the GPU scorer uses.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from ... import spec
from ..._lazy import require
from .. import device_faces

log = logging.getLogger(__name__)


class TorchRuntime:
    name = "torch"
    tensors = True  # works on torch tensors on self.device: the engine keeps frames there

    def __init__(self, seed_model, device: str = "cuda", fp16: Optional[bool] = None,
                 cuda_graph_batches: Sequence[int] = (8, 16, 32), model_id: str = "unknown",
                 networks: Sequence[str] = ("detector", "classifier"), compile: bool = False):
        """`networks`: which of the two to build (a Triton model instance serves one of them; `seed_model` may
        then be None for a detector alone). `compile`: both networks through `torch.compile` (inductor, the
        compiled engine where TensorRT is absent), compiled per batch shape on first use and cached on disk
        between runs (`compile_cache_dir()`); the seconds spent compiling are in `compile_seconds`."""
        torch = require("torch", extra="export")
        from ...nets.retinaface import FaceDetector, load_from_onnx
        from ...nets.seed_model import FrameClassifier

        self.torch = torch
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise require_cuda_error()
        self.cuda = self.device.type == "cuda"
        self.fp16 = self.cuda if fp16 is None else fp16
        self.dtype = torch.float16 if self.fp16 else torch.float32
        self.model_id = model_id
        cls = FrameClassifier(seed_model).eval().to(self.device, self.dtype) if "classifier" in networks else None
        det = FaceDetector(load_from_onnx()).eval().to(self.device, self.dtype) if "detector" in networks else None
        if self.cuda:
            cls = cls.to(memory_format=torch.channels_last) if cls is not None else None
            det = det.to(memory_format=torch.channels_last) if det is not None else None
        self.compiled = bool(compile)
        self.compile_seconds = 0.0
        if compile:
            cls, det = compile_networks(torch, cls, det)
        self.cls, self.det = cls, det
        self._graphs: Dict[int, tuple] = {}
        self._graph_lock = threading.Lock()  # replay writes shared static buffers
        self._priors: Dict[tuple, object] = {}
        if self.cuda and not self.fp16:
            # exact mode: fp32 means fp32 (TF32 would round the convolutions' and matmuls' inputs to 10 bits)
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        if self.cuda:
            # cuDNN autotuning (benchmark) only while the classifier's graphs are captured here: its cache of
            # tuned algorithms is per thread, and the engine's locate workers are new threads for every
            # `score()` call, so with it on each call re-tuned the detector's ~50 convolutions (an H200 clip
            # took 8.8-11.8 s instead of ~0.4 s: 51,504 kernel launches for 150 frames, 12,544 of them
            # cuDNN's trial convolutions; benchmarks/results/*h200*/profile-hotpath.log). Off, cuDNN's
            # heuristics choose at once, the same in every thread.
            tuned = torch.backends.cudnn.benchmark
            torch.backends.cudnn.benchmark = True
            try:
                for b in (cuda_graph_batches if cls is not None else ()):
                    self._capture(b)
            finally:
                torch.backends.cudnn.benchmark = tuned
            if self.compiled:
                log.info("torch.compile: classifier compiled for batches %s in %.1f s (cache %s)",
                         list(cuda_graph_batches), self.compile_seconds, compile_cache_dir())

    # ------------------------------------------------------------------------------ CUDA graphs
    def _capture(self, batch: int) -> None:
        """Capture the classifier for one batch size, as torch's CUDA-graphs notes prescribe: warm up on a
        side stream (cuDNN autotuning and the allocator settle there), then capture into a static
        input/output pair. Replays copy into the static input and read the static output."""
        torch = self.torch
        static_in = torch.zeros(batch, 3, spec.FACE_SIZE, spec.FACE_SIZE, device=self.device, dtype=self.dtype)
        static_in = static_in.contiguous(memory_format=torch.channels_last)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        t0 = time.perf_counter()
        with torch.no_grad(), torch.cuda.stream(s):
            for _ in range(3):  # warm-up before capture (cuDNN autotuning, allocator; compiling with compile=True)
                self.cls(static_in)
        s.synchronize()
        if self.compiled:
            self.compile_seconds += time.perf_counter() - t0
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        # capture on the warm-up stream (library handles made there are reused, as make_graphed_callables
        # does); thread_local: CUDA work of other threads (decode workers of another scorer) cannot
        # invalidate this capture. Each graph keeps its own memory pool: they replay in any order.
        with torch.no_grad(), torch.cuda.graph(g, stream=s, capture_error_mode="thread_local"):
            static_out = self.cls(static_in)
        torch.cuda.current_stream().wait_stream(s)
        self._graphs[batch] = (g, static_in, static_out)

    def _graph_for(self, n: int):
        """The smallest captured batch size >= n (the remainder is padded), else the largest one."""
        sizes = sorted(self._graphs)
        for b in sizes:
            if b >= n:
                return b
        return sizes[-1]

    # -------------------------------------------------------------------------------- networks
    def classify_tensor(self, faces):
        """faces: [B,3,112,112] normalised tensor on the device -> logits float32 [B,2] on the device.

        With CUDA graphs, every chunk runs a captured graph: full chunks of the largest size, the tail
        padded up to the next captured size (no eager call with a new shape, which would make cuDNN
        autotune again). `copy_` into the static input converts dtype and layout in the same kernel."""
        torch = self.torch
        n = faces.shape[0]
        if n == 0:
            return torch.zeros(0, spec.NUM_CLASSES, device=self.device)
        faces = faces.to(self.device, non_blocking=True)
        if not self._graphs:
            x = faces.to(self.dtype)
            if self.cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                return self.cls(x).float()
        out = torch.empty(n, spec.NUM_CLASSES, device=self.device, dtype=torch.float32)
        with torch.no_grad(), self._graph_lock:
            i = 0
            while i < n:
                b = self._graph_for(n - i)
                k = min(b, n - i)
                g, sin, sout = self._graphs[b]
                sin[:k].copy_(faces[i:i + k])
                g.replay()
                out[i:i + k].copy_(sout[:k])
                i += k
        return out

    def classify(self, faces: np.ndarray) -> np.ndarray:
        return self.classify_tensor(self.torch.from_numpy(faces)).cpu().numpy()

    def detect_tensor(self, images, landmarks: bool = True):
        """images: [B,3,h,w] float BGR 0..255 on the device -> (loc [B,A,4], scores [B,A], landmarks [B,A,10])
        float32 (the first two only with landmarks=False)."""
        torch = self.torch
        images = images.to(self.device, self.dtype)
        if self.cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            loc, scores, lm = self.det(images)
        return (loc.float(), scores.float(), lm.float()) if landmarks else (loc.float(), scores.float())

    def detect(self, images: np.ndarray):
        loc, scores, lm = self.detect_tensor(self.torch.from_numpy(images))
        return loc.cpu().numpy(), scores.cpu().numpy(), lm.cpu().numpy()

    # --------------------------------------------------------------------- device-side helpers
    def frames_to_detector(self, frames, max_side: int = spec.DETECTOR_MAX_SIDE):
        return frames_to_detector(frames, max_side, channels_last=self.cuda)

    def crop_resize(self, frames, boxes: List[Optional[np.ndarray]], margin: float = 0.0, index=None):
        return crop_resize(frames, boxes, margin, index=index, dtype=self.dtype)

    def locate(self, frames, max_side: int = spec.DETECTOR_MAX_SIDE,
               threshold: float = spec.DETECTOR_SCORE_THRESHOLD, mode: str = "largest",
               min_face: float = spec.DETECTOR_MIN_FACE, box: str = spec.DEFAULT_BOX) -> list:
        """uint8 BGR frames [B,H,W,3] on the device -> the faces scored in each frame (lists of Detection:
        the largest one, or all with mode="all"; boxes in convention `box`), as `faces.faces_per_frame`
        gives them.

        Thresholding, box decoding, NMS of the whole batch, the box convention and the face choice run on
        the device (`pipeline/device_faces.py`); only the chosen boxes come back to the host, in one copy."""
        x, scale = self.frames_to_detector(frames, max_side)
        loc, scores, lm = self.detect_tensor(x)
        key = (x.shape[2], x.shape[3])
        pri = self._priors.get(key)
        if pri is None:
            from ..detection import anchors

            pri = self._priors[key] = self.torch.tensor(anchors(*key), device=self.device)
        rows = device_faces.locate(loc, scores, pri, key[0], key[1], scale, threshold, box=box, min_face=min_face,
                                   mode=mode, landmarks=lm)
        return device_faces.to_detections(rows, x.shape[0])  # the chunk's one device-to-host copy of boxes


def frames_to_detector(frames, max_side: int = spec.DETECTOR_MAX_SIDE, channels_last: bool = False):
    """uint8 BGR frames [B,H,W,3] (tensor, any device) -> detector input [B,3,h,w] float, and the scale.

    The downscale is the seed's resize definition (`dfserve.resize`, exact integer arithmetic), which gives
    the CPU path's detector input (`faces.detector_input`) byte for byte (tests/test_device_faces.py): both
    paths detect on the same pixels. With `channels_last` the result keeps the frames' NHWC memory layout
    (what the detector on the GPU wants) instead of a copy to NCHW."""
    import torch

    from ...resize import downscale_frames_torch, resize_crops_torch
    from ..faces import detector_size

    n, H, W = frames.shape[0], frames.shape[1], frames.shape[2]
    h, w, scale = detector_size(H, W, max_side)
    if scale < 1.0 and frames.is_cuda and (x := downscale_frames_torch(frames, (h, w))) is not None:
        # whole factors on the GPU: two strided integer convolutions (same values); on the CPU the tap windows
        # below are faster (16 1080p frames, one thread: 0.36 s against 0.49 s)
        return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), scale
    if scale < 1.0:
        tblr = np.tile(np.array([[0, H, 0, W]], np.int64), (n, 1))
        frames = resize_crops_torch(frames, torch.arange(n, device=frames.device), tblr, (h, w))
    x = frames.permute(0, 3, 1, 2).float()
    return (x if channels_last else x.contiguous()), scale


def crop_boxes(boxes: Sequence[Optional[np.ndarray]], height: int, width: int, margin: float = 0.0) -> np.ndarray:
    """`faces.crop_box` for a whole batch at once: int64 [N,4] (top, bottom, left, right); None -> whole frame."""
    n = len(boxes)
    b = np.zeros((n, 4), np.float64)
    whole = np.array([x is None for x in boxes], dtype=bool)
    for k, x in enumerate(boxes):
        if x is not None:
            b[k] = np.asarray(x, np.float64)[:4]
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    if margin:
        mw, mh = (x2 - x1) * margin, (y2 - y1) * margin
        x1, y1, x2, y2 = x1 - mw, y1 - mh, x2 + mw, y2 + mh
    left = np.maximum(0, np.round(x1)).astype(np.int64)  # np.round and round() both round half to even
    top = np.maximum(0, np.round(y1)).astype(np.int64)
    right = np.minimum(width, np.round(x2)).astype(np.int64)
    bottom = np.minimum(height, np.round(y2)).astype(np.int64)
    bad = whole | (right - left < 2) | (bottom - top < 2)
    out = np.stack([top, bottom, left, right], 1)
    out[bad] = (0, height, 0, width)
    return out


def crop_resize(frames, boxes: Sequence[Optional[np.ndarray]], margin: float = 0.0, index=None, dtype=None):
    """Crop each face (whole frame where None), resize to 112x112 and normalise, on the frames' device.

    frames: uint8 BGR [N,H,W,3] tensor; box k is cut from frame `index[k]` (default: frame k).
    The resize is `dfserve.resize.resize_crops_torch`, bit-exact to the CPU path's `resize_uint8` (the
    seed's Pillow); faces go through one batched resample, whole frames through another. The
    normalisation repeats `contract.normalize_faces` operation for operation in float32, so the
    classifier gets the same bytes as on the CPU path. Returns [B,3,112,112] in `dtype` (float32 by default).
    """
    import torch

    from ...resize import downscale_frames_torch, resize_crops_torch

    dev = frames.device
    n = len(boxes)
    size = spec.FACE_SIZE
    H, W = frames.shape[1], frames.shape[2]
    if index is None:
        if frames.shape[0] != n:
            raise ValueError(f"crop_resize: {n} boxes for {frames.shape[0]} frames and no index")
        fidx = torch.arange(n, device=dev)
    else:
        fidx = torch.as_tensor(index, dtype=torch.long).to(dev)
    tblr = crop_boxes(boxes, H, W, margin)
    whole = (tblr[:, 0] == 0) & (tblr[:, 1] == H) & (tblr[:, 2] == 0) & (tblr[:, 3] == W)
    crops = torch.empty(n, size, size, frames.shape[3], dtype=torch.uint8, device=dev)
    for part in (whole, ~whole):  # whole frames and faces apart: padding faces to frame size would be waste
        if part.any():
            k = torch.from_numpy(np.nonzero(part)[0]).to(dev)
            crops.index_copy_(0, k, resize_crops_torch(frames, fidx.index_select(0, k), tblr[part], size))
    res = normalize_faces_torch(crops)
    return res if dtype is None else res.to(dtype)


def normalize_faces_torch(crops):
    """uint8 [N,112,112,3] BGR tensor -> float32 [N,3,112,112]: `contract.normalize_faces`, the same float32
    operations in the same order (x * float32(1/255), - mean, / std), so the same bytes on any device."""
    import torch

    dev = crops.device
    x = crops.to(torch.float32) * torch.tensor(np.float32(1.0 / 255.0), device=dev)
    x = x - torch.tensor(np.asarray(spec.NORM_MEAN, np.float32), device=dev)
    x = x / torch.tensor(np.asarray(spec.NORM_STD, np.float32), device=dev)
    return x.permute(0, 3, 1, 2).contiguous()


def compile_cache_dir() -> str:
    """Where inductor keeps compiled kernels between runs: $TORCHINDUCTOR_CACHE_DIR, else under dfserve's cache."""
    from ..model_files import cache_root

    return os.environ.get("TORCHINDUCTOR_CACHE_DIR") or str(cache_root() / "inductor")


def compile_networks(torch, cls, det, mode: Optional[str] = None):
    """Both networks through torch.compile (inductor, static shapes: one compilation per batch shape, which
    the CUDA-graph sizes and the detector's chunk shapes keep few). Inductor's FX-graph and kernel caches
    live in `compile_cache_dir()`, so a second run loads instead of compiling."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", compile_cache_dir())
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    # inductor's default mode (no cudagraphs of its own: the CUDA graphs are this runtime's); autotuning
    # ("max-autotune-no-cudagraphs", $DFSERVE_COMPILE_MODE) costs minutes of compile per shape
    kw = dict(backend="inductor", dynamic=False, mode=mode or os.environ.get("DFSERVE_COMPILE_MODE", "default"))
    return (torch.compile(cls, **kw) if cls is not None else None,
            torch.compile(det, **kw) if det is not None else None)


def require_cuda_error():
    from ...errors import MissingDependencyError

    return MissingDependencyError("--device cuda needs an NVIDIA GPU and a CUDA build of torch; "
                                  "torch.cuda.is_available() is False on this machine")
