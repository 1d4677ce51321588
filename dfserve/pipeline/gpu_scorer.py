"""`dfserve score --device cuda`: NVDEC decode, detection, crop/resize and classification on the GPU.

Frames stay in GPU memory from the decoder to the classifier: only detector outputs (a few KB per
frame, for NMS) and per-frame logits come back to the host. Several videos are decoded at once
(decode worker threads, one NVDEC session each) and their faces share classifier batches, exactly
as in the CPU Scorer this class extends. Without PyNvVideoCodec, frames are decoded by PyAV and
uploaded once per chunk.
"""
from __future__ import annotations

import logging
from typing import Iterator, List, Tuple

import numpy as np

from .. import spec
from .decode import DecodeStats, VideoInfo, iter_frames
from .engine import ScoreOptions, Scorer
from .faces import faces_per_frame
from .sampling import SamplePolicy

log = logging.getLogger(__name__)


def nvdec_available() -> bool:
    try:
        import PyNvVideoCodec  # noqa: F401
    except Exception:  # noqa: BLE001 - it fails to import where no NVIDIA driver is
        return False
    return True


def iter_frames_nvdec(path: str, policy: SamplePolicy, info: VideoInfo, stats: DecodeStats, chunk: int = 16,
                      gpu_id: int = 0) -> Iterator[Tuple[List[int], "object"]]:
    """Decode with NVDEC (PyNvVideoCodec SimpleDecoder); yield (indices, uint8 BGR [B,H,W,3] CUDA tensor).

    Sparse policies (every:K with large K, fps:R, uniform:N, first:N) fetch only the frames they keep
    by index, which lets the decoder seek to the nearest key frame instead of decoding everything.
    """
    import PyNvVideoCodec as nvc
    import torch

    from ..errors import VideoError

    try:
        dec = nvc.SimpleDecoder(path, gpu_id=gpu_id, use_device_memory=True,
                                output_color_type=nvc.OutputColorType.RGB)
    except Exception as exc:  # noqa: BLE001
        raise VideoError(f"{path}: NVDEC cannot decode this video ({exc})") from exc
    n = len(dec) if info.n_frames is None else info.n_frames
    sampler = policy.sampler(info.fps, n)
    stats.frames_decoded = 0

    def to_bgr(frames):
        rgb = torch.stack([torch.from_dlpack(f) for f in frames])  # [B,H,W,3] RGB uint8 on the GPU
        return rgb.flip(-1).contiguous()  # BGR, as OpenCV gives it (the seed's channel order)

    if policy.kind == "all":  # sequential: decode in batches, no seeking
        i = 0
        while True:
            try:
                frames = dec.get_batch_frames(chunk)
            except Exception as exc:  # noqa: BLE001
                if i == 0:
                    raise VideoError(f"{path}: corrupt video, NVDEC decoded no frame ({exc})") from exc
                stats.warning = f"decoding stopped after frame {i - 1}: {exc}"
                return
            if not frames:
                break
            idx = list(range(i, i + len(frames)))
            i += len(frames)
            stats.frames_decoded = i
            yield idx, to_bgr(frames)
        if i == 0:
            raise VideoError(f"{path}: no frame could be decoded (truncated or corrupt video)")
        return
    wanted = sampler.expected() or []
    for start in range(0, len(wanted), chunk):  # sparse policies: fetch by index (the decoder seeks)
        idx = wanted[start:start + chunk]
        try:
            frames = dec.get_batch_frames_by_index(idx)
        except Exception as exc:  # noqa: BLE001
            if stats.frames_decoded == 0:
                raise VideoError(f"{path}: corrupt video, NVDEC decoded no frame ({exc})") from exc
            stats.warning = f"decoding stopped after frame {idx[0] - 1}: {exc}"
            return
        stats.frames_decoded = idx[-1] + 1
        yield idx, to_bgr(frames)


def iter_frames_uploaded(path, policy, info, stats, chunk=16, device="cuda"):
    """PyAV decode, one host-to-device copy per chunk."""
    import torch

    for idx, frames in iter_frames(path, policy, info, stats, chunk):
        yield idx, torch.from_numpy(np.stack(frames)).to(device, non_blocking=True)


class TorchScorer(Scorer):
    """A Scorer whose frames, crops and faces are torch tensors on the runtime's device."""

    def __init__(self, runtime, options: ScoreOptions, model_id=None, use_nvdec: bool | None = None):
        super().__init__(runtime, options, model_id)
        dev = runtime.device
        if dev.type == "cuda" and (use_nvdec if use_nvdec is not None else nvdec_available()):
            self.iter_frames = lambda *a: iter_frames_nvdec(*a, gpu_id=dev.index or 0)
            self.decoder = "nvdec"
        else:
            self.iter_frames = lambda *a: iter_frames_uploaded(*a, device=dev)
            self.decoder = "pyav"
        log.info("torch runtime on %s (%s), decoder %s", dev, "fp16" if runtime.fp16 else "fp32", self.decoder)

    def detector_prep(self, frames):
        return None  # the detector input is made on the device, in locate()

    def locate(self, frames, prep=None) -> list:
        import torch

        batch = torch.stack(list(frames)) if isinstance(frames, (list, tuple)) else frames
        x, scale = self.rt.frames_to_detector(batch, self.opt.detect_max_side)
        loc, scores = self.rt.detect_tensor(x)
        return faces_per_frame(loc.cpu().numpy(), scores.cpu().numpy(), x.shape[2], x.shape[3], scale,
                               self.opt.detect_threshold, self.opt.faces, self.opt.min_face)

    def crop(self, frames, boxes) -> list:
        import torch

        out: List = []
        # frames of one chunk share their size: one batched call
        batch = torch.stack(list(frames)) if isinstance(frames, (list, tuple)) else frames
        faces = self.rt.crop_resize(batch, boxes, self.opt.margin)
        out.extend(faces.unbind(0))
        return out

    def faces_to_logits(self, faces: list) -> np.ndarray:
        import torch

        return self.rt.classify_tensor(torch.stack(faces)).cpu().numpy()


__all__ = ["TorchScorer", "iter_frames_nvdec", "nvdec_available", "spec"]
