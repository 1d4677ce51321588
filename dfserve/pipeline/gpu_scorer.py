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
from .decode import DecodeStats, VideoInfo
from .engine import ScoreOptions, Scorer
from .sampling import SamplePolicy
from .split_decode import iter_frames_split

log = logging.getLogger(__name__)


def nvdec_status() -> Tuple[bool, str]:
    """(usable, why): can NVDEC decode here? PyNvVideoCodec must import (it loads the NVIDIA driver's
    libnvcuvid at import, so it fails where no driver is) and torch must see a CUDA device."""
    try:
        import PyNvVideoCodec as nvc
    except ModuleNotFoundError:
        return False, "PyNvVideoCodec is not installed (pip install 'dfserve[gpu]' or pynvvideocodec==2.2.4)"
    except Exception as exc:  # noqa: BLE001 - it fails to import where no NVIDIA driver is
        return False, f"PyNvVideoCodec does not import ({type(exc).__name__}: {exc}); it needs an NVIDIA driver"
    try:
        import torch
    except Exception:  # noqa: BLE001
        return False, "torch is not installed: frames decoded by NVDEC are handed to torch through DLPack"
    if not torch.cuda.is_available():
        return False, "torch.cuda.is_available() is False (no GPU, or a CPU build of torch)"
    return True, f"PyNvVideoCodec {getattr(nvc, '__version__', '?')} with CUDA device 0"


def nvdec_available() -> bool:
    return nvdec_status()[0]


def _frames_to_bgr_batch(frames, colors: str = "seed", height: int = 0, bits: int = 8, full_range: bool = False):
    """PyNvVideoCodec 2.2's SimpleDecoder returns a *list* of DecodedFrame (no batched surface exists in
    its API: see SimpleDecoder.get_batch_frames, "DecodedFrame[]"). Each one is a zero-copy DLPack view
    of device memory; one stack copies them into a batch we own.

    colors "seed": the frames are NVDEC's native surfaces (NV12, or P016 for 10/12-bit: [H*3/2, W]) and
    gpu_colours.nv12_to_bgr converts them by the CPU path's rule (frame_colours). colors "stream": they are
    NVDEC's own RGB conversion ([H,W,3] RGB, the stream's matrix); one flip gives BGR."""
    import torch

    if colors == "stream":
        rgb = torch.stack([torch.from_dlpack(f) for f in frames])  # [B,H,W,3] RGB uint8 on the GPU
        return rgb.flip(-1)  # BGR, as OpenCV gives it (the seed's channel order); flip returns a new tensor
    from .gpu_colours import nv12_to_bgr, split_nv12

    surf = torch.stack([torch.from_dlpack(f) for f in frames])
    if surf.dim() == 4:  # some builds expose [H*3/2, W, 1]
        surf = surf[..., 0]
    y, uv = split_nv12(surf, height)
    return nv12_to_bgr(y, uv, bits=bits, full_range=full_range, msb_aligned=bits > 8)


def _stream_format(path: str):
    """(bit depth, full range, display rotation) of the video stream as the CPU path reads them: the pixel
    format, and the first frame's display matrix (one frame decoded on the CPU)."""
    import av

    with av.open(path) as c:
        vs = c.streams.video[0]
        fmt = vs.codec_context.format
        bits, full = (8, False) if fmt is None else (fmt.components[0].bits, fmt.name.startswith("yuvj"))
        try:
            rot = next(c.decode(vs)).rotation or 0
        except (StopIteration, av.FFmpegError):
            rot = 0
        return bits, full, int(rot)


def upright_batch(frames, rotation: int):
    """`decode.upright` on a batch tensor [B,H,W,C]: the display rotation, as the CPU path applies it."""
    import torch

    k = int(round(rotation / 90.0)) % 4
    return torch.rot90(frames, k, dims=(1, 2)).contiguous() if k else frames


def iter_frames_nvdec(path: str, policy: SamplePolicy, info: VideoInfo, stats: DecodeStats, chunk: int = 16,
                      gpu_id: int = 0, colors: str = "seed", guard=None) -> Iterator[Tuple[List[int], "object"]]:
    """Decode with NVDEC (PyNvVideoCodec SimpleDecoder); yield (indices, uint8 BGR [B,H,W,3] CUDA tensor).

    One SimpleDecoder, hence one NVDEC session, per video: the scorer's decode workers decode several
    videos at once, each on its own session. `--split` does not apply here (a video is one session; the
    PyAV paths split: split_decode.py). 'all' decodes sequential batches (get_batch_frames); sparse
    policies fetch only the frames they keep by index (get_batch_frames_by_index), which lets the
    decoder seek to the nearest key frame instead of decoding everything.

    The decoder's frames are its own buffers: the batch copy made from them is finished (a CUDA event
    on this thread's stream) before the decoder is asked for more, and the frames are referenced until
    then, so a later decode can never overwrite pixels still being copied.
    """
    import PyNvVideoCodec as nvc
    import torch

    from ..errors import VideoError

    native = colors != "stream"
    bits, full_range, rotation = _stream_format(path)
    if not native:
        bits, full_range = 8, False
    coded_height = info.height
    try:
        dec = nvc.SimpleDecoder(path, gpu_id=gpu_id, use_device_memory=True,
                                output_color_type=nvc.OutputColorType.NATIVE if native else nvc.OutputColorType.RGB)
    except Exception as exc:  # noqa: BLE001
        raise VideoError(f"{path}: NVDEC cannot decode this video ({exc})") from exc
    total = len(dec)
    n = total if info.n_frames is None else info.n_frames
    stats.frames_decoded = 0
    pending = None  # (event, frames) of the previous batch

    def settle():
        nonlocal pending
        if pending is not None:
            pending[0].synchronize()
            pending = None

    def batch(frames):
        nonlocal pending
        with torch.cuda.device(gpu_id):
            out = upright_batch(_frames_to_bgr_batch(frames, colors, coded_height, bits, full_range), rotation)
            ev = torch.cuda.Event()
            ev.record()
        pending = (ev, frames)
        info.rotation = rotation
        info.height, info.width = out.shape[1], out.shape[2]  # upright, as the CPU path records it
        return out

    try:
        if policy.kind == "all":  # sequential: decode in batches, no seeking
            i = 0
            while True:
                settle()
                # never ask past the end the decoder knows: there it prints a warning per missing index
                # on stdout (where `dfserve score` writes its rows); a shorter stream just returns less
                want = chunk if total <= 0 else min(chunk, total - i)
                if want <= 0:
                    break
                try:
                    frames = dec.get_batch_frames(want)
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
                if guard is not None:  # the request's limits (limits.py), on the frames this batch decoded
                    guard(i, info.width, info.height)
                yield idx, batch(frames)
            if i == 0:
                raise VideoError(f"{path}: no frame could be decoded (truncated or corrupt video)")
            return
        # sparse policies: fetch by index (the decoder seeks). SimpleDecoder drops indices outside
        # [0, len) with a warning and returns the rest, so ask only for those.
        wanted = [k for k in (policy.sampler(info.fps, n).expected() or []) if 0 <= k < total]
        for start in range(0, len(wanted), chunk):
            idx = wanted[start:start + chunk]
            settle()
            try:
                frames = dec.get_batch_frames_by_index(idx)
            except Exception as exc:  # noqa: BLE001
                if stats.frames_decoded == 0:
                    raise VideoError(f"{path}: corrupt video, NVDEC decoded no frame ({exc})") from exc
                stats.warning = f"decoding stopped after frame {idx[0] - 1}: {exc}"
                return
            if len(frames) != len(idx):
                stats.warning = f"NVDEC returned {len(frames)} of the {len(idx)} frames asked for at {idx[0]}"
                idx = idx[:len(frames)]
                if not idx:
                    return
            stats.frames_decoded = idx[-1] + 1
            if guard is not None:  # seeking passes frames it need not decode: counted as decoded (conservative)
                guard(stats.frames_decoded, info.width, info.height)
            yield idx, batch(frames)
    finally:
        settle()


def iter_frames_uploaded(path, policy, info, stats, chunk=16, device="cuda", colors="seed", split="1", guard=None):
    """PyAV decode (`split` key-frame ranges: split_decode.py), one host-to-device copy per chunk (per run of
    one frame size, where the size changes mid-chunk: a batch tensor holds one size)."""
    import torch

    from .chunk import same_size_runs

    for idx, frames in iter_frames_split(path, policy, info, stats, chunk, guard=guard, colors=colors, split=split):
        for run_idx, run in same_size_runs(idx, frames):
            yield run_idx, torch.from_numpy(np.stack(run)).to(device, non_blocking=True)


class TorchScorer(Scorer):
    """A Scorer whose frames, crops and faces are torch tensors on the runtime's device."""

    # locate workers (detector, NMS, face choice, crops) run beside the classifier: the classifier's CUDA graphs
    # are captured when the runtime is made, in thread-local mode, and replayed under a lock
    overlap = True

    def __init__(self, runtime, options: ScoreOptions, model_id=None, use_nvdec: bool | None = None):
        super().__init__(runtime, options, model_id)
        dev = runtime.device
        if dev.type == "cuda" and (use_nvdec if use_nvdec is not None else nvdec_available()):
            self.iter_frames = lambda *a, **kw: iter_frames_nvdec(*a, gpu_id=dev.index or 0, **kw)
            self.decoder = "nvdec"
        else:
            self.iter_frames = lambda *a, **kw: iter_frames_uploaded(*a, device=dev, split=self.opt.split, **kw)
            self.decoder = "pyav"
        import torch

        self._torch = torch
        self._streams: dict = {}
        log.info("torch runtime on %s (%s), decoder %s, %d locate worker(s)", dev, "fp16" if runtime.fp16 else "fp32",
                 self.decoder, self.locate_workers())

    def locate_workers(self) -> int:
        if self.opt.faces == "all":
            return 1  # the tracker needs the chunks in order
        if self.opt.streams:
            return self.opt.streams
        return spec.GPU_STREAMS if self.rt.device.type == "cuda" else 1

    def worker_context(self, k: int):
        """Locate worker k runs its chunks on its own CUDA stream: after the work queued on the default
        stream (the decoded frames), and finished before its crops go to the classifier (default stream)."""
        torch = self._torch
        dev = self.rt.device
        if dev.type != "cuda":
            return super().worker_context(k)
        s = self._streams.get(k)
        if s is None:
            s = self._streams[k] = torch.cuda.Stream(device=dev)
        return _on_stream(torch, s, dev)

    def detector_prep(self, frames):
        return None  # the detector input is made on the device, in locate()

    def locate(self, frames, prep=None) -> list:
        batch, index = as_batch(frames)
        if index is not None:
            batch = batch.index_select(0, self._torch.as_tensor(index, device=batch.device))
        return self.rt.locate(batch, self.opt.detect_max_side, self.opt.detect_threshold, self.opt.faces,
                              self.opt.min_face, self.opt.box)

    def crop(self, frames, boxes) -> list:
        # The engine hands the kept frames of a chunk as a list of views of the decoded batch: crop them
        # from that batch by index (no stacking copy), the whole chunk in one batched operation.
        batch, index = as_batch(frames)
        faces = self.rt.crop_resize(batch, boxes, self.opt.margin, index=index)
        return list(faces.unbind(0))

    def evidence_pixels(self, crop) -> np.ndarray:
        """The uint8 crop behind one normalised face tensor (what `crop` returns here): the normalisation
        undone in float64 and rounded, exact for float32 and fp16 faces (errors far below half a level)."""
        x = crop.detach().to("cpu", self._torch.float64).numpy().transpose(1, 2, 0)
        px = (x * np.asarray(spec.NORM_STD) + np.asarray(spec.NORM_MEAN)) * 255.0
        return np.clip(np.rint(px), 0, 255).astype(np.uint8)

    def faces_to_logits(self, faces: list) -> np.ndarray:
        batch, index = as_batch(faces)
        if index is not None:
            batch = batch.index_select(0, self._torch.as_tensor(index, device=batch.device))
        return self.rt.classify_tensor(batch).cpu().numpy()  # the only per-batch device-to-host copy


class _on_stream:
    """`with`: make `stream` current after the default stream's queued work; on exit, wait for what was queued
    on it (the crops are read by the classifier on the default stream right after)."""

    def __init__(self, torch, stream, device):
        self.torch, self.stream, self.device = torch, stream, device

    def __enter__(self):
        self.stream.wait_stream(self.torch.cuda.default_stream(self.device))
        self._ctx = self.torch.cuda.stream(self.stream)
        self._ctx.__enter__()
        return self.stream

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        self.stream.synchronize()  # blocks this worker only; the other workers keep the GPU busy
        return False


def as_batch(items):
    """A tensor batch for `items` (a tensor, or a list of tensors of one shape): (batch, index).

    When every item is a view `base[i]` of one 4-D/5-D batch (what indexing a decoded chunk gives), the
    base and the indices come back and nothing is copied; index is None when the items are the whole
    base in order. Otherwise the items are stacked (one copy)."""
    import torch

    if torch.is_tensor(items):
        return items, None
    items = list(items)
    base = items[0]._base if items else None
    if base is not None and base.dim() == items[0].dim() + 1 and base.stride(0) > 0:
        step, off0 = base.stride(0), base.storage_offset()
        shape, strides = tuple(base.shape[1:]), tuple(base.stride()[1:])
        index = []
        for t in items:
            d = t.storage_offset() - off0
            if t._base is not base or d % step or tuple(t.shape) != shape or tuple(t.stride()) != strides:
                break
            index.append(d // step)
        else:
            if index == list(range(base.shape[0])):
                return base, None
            return base, index
    return torch.stack(items), None


__all__ = ["TorchScorer", "as_batch", "iter_frames_nvdec", "nvdec_available", "nvdec_status", "spec"]
