"""The PyTorch runtime: detector and classifier in torch, batched crop + resize on the device.

On CUDA (`dfserve score --device cuda`): fp16 weights, channels_last, CUDA graphs captured for the
common classifier batch sizes, frames kept on the GPU from NVDEC to the classifier. The same code
runs on the CPU in fp32, which is how CI verifies its logic against the onnxruntime path.

Interface, as every runtime: `detect(images [B,3,h,w] float BGR 0..255) -> (loc, scores)` and
`classify(faces [B,3,112,112]) -> logits [B,2]`, plus the device-side helpers the GPU scorer uses.
"""
from __future__ import annotations

import logging
import threading
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
        self._graph_lock = threading.Lock()  # replay writes shared static buffers
        self._priors: Dict[tuple, object] = {}
        if self.cuda:
            torch.backends.cudnn.benchmark = True  # fixed shapes per batch size: let cuDNN pick kernels
            for b in cuda_graph_batches:
                self._capture(b)

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
        with torch.no_grad(), torch.cuda.stream(s):
            for _ in range(3):  # warm-up before capture (cuDNN autotuning, allocator)
                self.cls(static_in)
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
        return frames_to_detector(frames, max_side, channels_last=self.cuda)

    def crop_resize(self, frames, boxes: List[Optional[np.ndarray]], margin: float = 0.0, index=None):
        return crop_resize(frames, boxes, margin, index=index, dtype=self.dtype)

    def locate(self, frames, max_side: int = spec.DETECTOR_MAX_SIDE,
               threshold: float = spec.DETECTOR_SCORE_THRESHOLD, mode: str = "largest",
               min_face: float = spec.DETECTOR_MIN_FACE, box: str = spec.DEFAULT_BOX) -> list:
        """uint8 BGR frames [B,H,W,3] on the device -> the faces scored in each frame (lists of Detection:
        the largest one, or all with mode="all"; boxes in convention `box`), as `faces.faces_per_frame`
        gives them.

        Thresholding and box decoding run on the device; only the candidates above the threshold
        (a few per frame) come back to the host, in one copy, for NMS and the face choice."""
        x, scale = self.frames_to_detector(frames, max_side)
        loc, scores = self.detect_tensor(x)
        key = (x.shape[2], x.shape[3])
        pri = self._priors.get(key)
        if pri is None:
            from .detection import anchors

            pri = self._priors[key] = self.torch.tensor(anchors(*key), device=self.device)
        return choose_from_candidates(*detector_candidates(loc, scores, pri, key[0], key[1], threshold),
                                      n_images=x.shape[0], scale=scale, mode=mode, min_face=min_face, box=box,
                                      input_hw=key)


def frames_to_detector(frames, max_side: int = spec.DETECTOR_MAX_SIDE, channels_last: bool = False):
    """uint8 BGR frames [B,H,W,3] (tensor, any device) -> detector input [B,3,h,w] float, and the scale.

    The resize runs in float32 (8-bit rounding as on the CPU path). With `channels_last` the result
    keeps the frames' NHWC memory layout (what the detector on the GPU wants) instead of a copy to NCHW."""
    import torch.nn.functional as F

    from .faces import detector_size

    h, w, scale = detector_size(frames.shape[1], frames.shape[2], max_side)
    x = frames.permute(0, 3, 1, 2).float()
    if scale < 1.0:
        x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False).round_().clamp_(0, 255)
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


def _aa_weights(torch, in_len, out_size: int, max_in: int):
    """Antialiased-bilinear resampling matrices [N, out_size, max_in] for N inputs of lengths `in_len`
    (columns past an input's length are zero): the weights torch's `interpolate(antialias=True)` and
    PIL's bilinear filter use (support = scale when shrinking, 1 when enlarging; normalised)."""
    L = in_len.to(torch.float64).view(-1, 1, 1)
    scale = L / out_size
    support = torch.where(scale >= 1.0, scale, torch.ones_like(scale))
    invscale = torch.where(scale >= 1.0, 1.0 / scale, torch.ones_like(scale))
    center = scale * (torch.arange(out_size, device=L.device, dtype=torch.float64).view(1, -1, 1) + 0.5)
    xmin = torch.clamp(torch.trunc(center - support + 0.5), min=0)
    xmax = torch.minimum(torch.trunc(center + support + 0.5), L)
    j = torch.arange(max_in, device=L.device, dtype=torch.float64).view(1, 1, -1)
    w = torch.clamp(1.0 - ((j - center + 0.5) * invscale).abs(), min=0.0)
    w = w * ((j >= xmin) & (j < xmax))
    total = w.sum(-1, keepdim=True)
    return (w / torch.where(total == 0, torch.ones_like(total), total)).to(torch.float32)


def _resize_crops(torch, frames, fidx, tblr: np.ndarray, size: int):
    """Crops of different sizes from uint8 frames [N,H,W,3] -> float [n,3,size,size] 0..255, all in a
    few batched ops: one gather of the crops (padded to the largest), the separable resampling as two
    batched matrix products with 8-bit rounding after each pass, PIL's pass order chosen per crop."""
    dev = frames.device
    t = torch.from_numpy(tblr).to(dev)
    h, w = t[:, 1] - t[:, 0], t[:, 3] - t[:, 2]
    hm, wm = int((tblr[:, 1] - tblr[:, 0]).max()), int((tblr[:, 3] - tblr[:, 2]).max())
    rows = torch.clamp(t[:, :1] + torch.arange(hm, device=dev).view(1, -1), max=frames.shape[1] - 1)
    cols = torch.clamp(t[:, 2:3] + torch.arange(wm, device=dev).view(1, -1), max=frames.shape[2] - 1)
    crops = frames[fidx.view(-1, 1, 1), rows.view(-1, hm, 1), cols.view(-1, 1, wm)]  # [n,hm,wm,3] uint8
    x = crops.permute(0, 3, 1, 2).float()  # [n,3,hm,wm]
    wy = _aa_weights(torch, h, size, hm).unsqueeze(1)  # [n,1,size,hm]
    wxt = _aa_weights(torch, w, size, wm).transpose(1, 2).unsqueeze(1)  # [n,1,wm,size]

    def q(v):
        return v.round_().clamp_(0, 255)

    vertical_first = q(torch.matmul(q(torch.matmul(wy, x)), wxt))
    horizontal_first = q(torch.matmul(wy, q(torch.matmul(x, wxt))))
    # Pillow runs the vertical pass first when it shrinks more vertically (and does shrink)
    sy, sx = h.double() / size, w.double() / size
    vfirst = ((sy > 1.0) & (sy > sx)).view(-1, 1, 1, 1)
    return torch.where(vfirst, vertical_first, horizontal_first)


def crop_resize(frames, boxes: Sequence[Optional[np.ndarray]], margin: float = 0.0, index=None, dtype=None):
    """Crop each face (whole frame where None), resize to 112x112 and normalise, on the frames' device.

    frames: uint8 BGR [N,H,W,3] tensor; box k is cut from frame `index[k]` (default: frame k).
    Antialiased bilinear in PIL's manner (two passes, 8-bit rounding); ImageNet statistics; BGR.
    The whole batch is done in a handful of tensor operations (no per-face Python or kernels):
    whole frames share one batched `interpolate`, faces one gather and two batched matmuls.
    Returns [B,3,112,112] in `dtype` (float32 by default).
    """
    import torch
    import torch.nn.functional as F

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
    out = torch.empty(n, 3, size, size, device=dev)
    if whole.any():
        k = torch.from_numpy(np.nonzero(whole)[0]).to(dev)
        x = frames.index_select(0, fidx.index_select(0, k)).permute(0, 3, 1, 2).float()
        out.index_copy_(0, k, _pil_like_resize(F, x, size))
    if not whole.all():
        k = torch.from_numpy(np.nonzero(~whole)[0]).to(dev)
        out.index_copy_(0, k, _resize_crops(torch, frames, fidx.index_select(0, k), tblr[~whole], size))
    mean = torch.tensor(spec.NORM_MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(spec.NORM_STD, device=dev).view(1, 3, 1, 1)
    res = (out / 255.0 - mean) / std
    return res if dtype is None else res.to(dtype)


def detector_candidates(loc, scores, priors, height: int, width: int, threshold: float):
    """Detector outputs on the device -> numpy [M,6] rows (image, score, x1, y1, x2, y2) of the anchors
    above the threshold, boxes decoded on the device; one device-to-host copy for the whole batch."""
    import torch

    from .detection import decode_boxes

    nz = torch.nonzero(scores > threshold)
    b, a = nz[:, 0], nz[:, 1]
    boxes = decode_boxes(loc[b, a], priors[a], height, width)
    packed = torch.cat([b.to(boxes.dtype).unsqueeze(1), scores[b, a].unsqueeze(1), boxes], 1)
    return (packed.cpu().numpy(),)


def choose_from_candidates(packed: np.ndarray, n_images: int, scale: float, mode: str = "largest",
                           min_face: float = spec.DETECTOR_MIN_FACE, box: str = spec.DEFAULT_BOX,
                           input_hw=None) -> list:
    """Host side of detection: NMS of each image's candidates, boxes put in convention `box` (trimmed to
    the frame, `input_hw` / scale, when the detector input's size is given), then the faces scored in
    each image (the same result as `faces.faces_per_frame` on the full outputs)."""
    from .box_convention import in_convention
    from .detection import Detection, all_faces, choose_face, nms

    frame_hw = None if input_hw is None else (input_hw[0] / scale, input_hw[1] / scale)
    out: List = [[] for _ in range(n_images)]
    if packed.shape[0] == 0:
        return out
    img = packed[:, 0].astype(np.int64)
    cuts = np.searchsorted(img, np.arange(n_images + 1))
    for k in range(n_images):
        rows = packed[cuts[k]:cuts[k + 1]]
        if rows.shape[0] == 0:
            continue
        boxes, sc = rows[:, 2:6], rows[:, 1]
        keep = nms(boxes, sc)
        kept = in_convention(boxes[keep] / scale, box, frame_hw)
        dets = [Detection(kb, float(sc[i])) for kb, i in zip(kept, keep)]
        if mode == "all":
            out[k] = all_faces(dets, min_face)
        else:
            c = choose_face(dets, min_face)
            out[k] = [c] if c is not None else []
    return out


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
