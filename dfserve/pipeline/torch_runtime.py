"""The PyTorch runtime: detector and classifier in torch, batched crop + resize on the device.

On CUDA (`dfserve score --device cuda`): fp16 weights, channels_last, CUDA graphs captured for the
common classifier batch sizes, frames kept on the GPU from NVDEC to the classifier. The same code
runs on the CPU in fp32, which is how CI verifies its logic against the onnxruntime path.

Interface, as every runtime: `detect(images [B,3,h,w] float BGR 0..255) -> (loc, scores)` and
`classify(faces [B,3,112,112]) -> logits [B,2]`, plus the device-side helpers the GPU scorer uses.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .. import spec
from .._lazy import require

log = logging.getLogger(__name__)


class TorchRuntime:
    name = "torch"
    tensors = True  # works on torch tensors on self.device: the engine keeps frames there

    def __init__(self, seed_model, device: str = "cuda", fp16: Optional[bool] = None,
                 cuda_graph_batches: Sequence[int] = (8, 16, 32), model_id: str = "unknown"):
        torch = require("torch", extra="export")
        from ..nets.retinaface import FaceDetector, load_from_onnx
        from ..nets.seed_model import FrameClassifier

        self.torch = torch
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise require_cuda_error()
        self.cuda = self.device.type == "cuda"
        self.fp16 = self.cuda if fp16 is None else fp16
        self.dtype = torch.float16 if self.fp16 else torch.float32
        self.model_id = model_id
        cls = FrameClassifier(seed_model).eval().to(self.device, self.dtype)
        det = FaceDetector(load_from_onnx()).eval().to(self.device, self.dtype)
        if self.cuda:
            cls = cls.to(memory_format=torch.channels_last)
            det = det.to(memory_format=torch.channels_last)
        self.cls, self.det = cls, det
        self._graphs: Dict[int, tuple] = {}
        if self.cuda:
            torch.backends.cudnn.benchmark = True  # fixed shapes per batch size: let cuDNN pick kernels
            for b in cuda_graph_batches:
                self._capture(b)

    # ------------------------------------------------------------------------------ CUDA graphs
    def _capture(self, batch: int) -> None:
        torch = self.torch
        static_in = torch.zeros(batch, 3, spec.FACE_SIZE, spec.FACE_SIZE, device=self.device, dtype=self.dtype)
        static_in = static_in.contiguous(memory_format=torch.channels_last)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(s):
            for _ in range(3):  # warm-up before capture (cuDNN autotuning, allocator)
                self.cls(static_in)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(g):
            static_out = self.cls(static_in)
        self._graphs[batch] = (g, static_in, static_out)

    # -------------------------------------------------------------------------------- networks
    def classify_tensor(self, faces):
        """faces: [B,3,112,112] normalised tensor on the device -> logits float32 [B,2] on the device."""
        torch = self.torch
        faces = faces.to(self.device, self.dtype)
        if self.cuda:
            faces = faces.contiguous(memory_format=torch.channels_last)
        out = []
        with torch.no_grad():
            i = 0
            while i < faces.shape[0]:
                n = faces.shape[0] - i
                fit = [b for b in sorted(self._graphs) if b <= n]
                if fit:
                    b = fit[-1]
                    g, sin, sout = self._graphs[b]
                    sin.copy_(faces[i:i + b])
                    g.replay()
                    out.append(sout.float().clone())
                    i += b
                else:
                    out.append(self.cls(faces[i:]).float())
                    i = faces.shape[0]
        return torch.cat(out) if out else torch.zeros(0, spec.NUM_CLASSES, device=self.device)

    def classify(self, faces: np.ndarray) -> np.ndarray:
        return self.classify_tensor(self.torch.from_numpy(faces)).cpu().numpy()

    def detect_tensor(self, images):
        """images: [B,3,h,w] float BGR 0..255 on the device -> (loc [B,A,4], scores [B,A]) float32."""
        torch = self.torch
        images = images.to(self.device, self.dtype)
        if self.cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            loc, scores, _ = self.det(images)
        return loc.float(), scores.float()

    def detect(self, images: np.ndarray):
        loc, scores = self.detect_tensor(self.torch.from_numpy(images))
        return loc.cpu().numpy(), scores.cpu().numpy()

    # --------------------------------------------------------------------- device-side helpers
    def frames_to_detector(self, frames, max_side: int = spec.DETECTOR_MAX_SIDE):
        return frames_to_detector(frames, max_side)

    def crop_resize(self, frames, boxes: List[Optional[np.ndarray]], margin: float = 0.0):
        return crop_resize(frames, boxes, margin)


def frames_to_detector(frames, max_side: int = spec.DETECTOR_MAX_SIDE):
    """uint8 BGR frames [B,H,W,3] (tensor, any device) -> detector input [B,3,h,w] float, and the scale."""
    import torch.nn.functional as F

    from .faces import detector_size

    h, w, scale = detector_size(frames.shape[1], frames.shape[2], max_side)
    x = frames.permute(0, 3, 1, 2).float()
    if scale < 1.0:
        x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False).round_().clamp_(0, 255)
    return x.contiguous(), scale


def crop_resize(frames, boxes: List[Optional[np.ndarray]], margin: float = 0.0):
    """Crop each frame's face (whole frame where None), resize to 112x112 and normalise, on the frames' device.

    Antialiased bilinear in PIL's manner (two passes, 8-bit rounding); ImageNet statistics; BGR.
    Returns float32 [B,3,112,112].
    """
    import torch
    import torch.nn.functional as F

    from .faces import crop_box

    dev = frames.device
    H, W = frames.shape[1], frames.shape[2]
    out = torch.empty(len(boxes), 3, spec.FACE_SIZE, spec.FACE_SIZE, device=dev)
    x = frames.permute(0, 3, 1, 2).float()
    for k, b in enumerate(boxes):
        t, btm, l, r = (0, H, 0, W) if b is None else crop_box(b, H, W, margin)
        out[k] = _pil_like_resize(F, x[k:k + 1, :, t:btm, l:r], spec.FACE_SIZE)[0]
    mean = torch.tensor(spec.NORM_MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(spec.NORM_STD, device=dev).view(1, 3, 1, 1)
    return (out / 255.0 - mean) / std


def require_cuda_error():
    from ..errors import MissingDependencyError

    return MissingDependencyError("--device cuda needs an NVIDIA GPU and a CUDA build of torch; "
                                  "torch.cuda.is_available() is False on this machine")


def _pil_like_resize(F, x, size: int):
    """Antialiased bilinear resize in two separable passes, rounding to 8 bits after each as PIL does
    on uint8 images. Recent Pillow runs the vertical pass first when it shrinks more than the
    horizontal one (measured against Pillow 13 here); this follows that, matching PIL within one
    grey level."""
    h, w = x.shape[2], x.shape[3]
    sy, sx = h / size, w / size
    first = (size, w) if (sy > 1.0 and sy > sx) else (h, size)
    for target in (first, (size, size)):
        x = F.interpolate(x, size=target, mode="bilinear", antialias=True, align_corners=False).round_().clamp_(0, 255)
    return x
