"""`dfserve score --device cuda`: NVDEC decode, detection, crop/resize and classification on the GPU.

Frames stay in GPU memory from the decoder to the classifier: only detector outputs (a few KB per
frame, for NMS) and per-frame logits come back to the host. Several videos are decoded at once
(decode worker threads; one NVDEC session each, or `--split K` sessions per video: nvdec.py) and their
faces share classifier batches, exactly as in the CPU Scorer this class extends. Without PyNvVideoCodec, frames are
decoded by PyAV and uploaded once per chunk; `--cpu-decoders N` adds PyAV decoders beside NVDEC (engine.Decoder).
On a GPU, PyAV's frames travel as their decoded planes and become BGR there (frame_planes.py): half the bytes of
BGR, and no colour conversion on the CPU.
"""
from __future__ import annotations

import logging
from functools import partial

import numpy as np

from .. import spec
from .engine import Decoder, ScoreOptions, Scorer
from .gpu_colours import planes_to_bgr
from .nvdec import (iter_frames_nvdec, iter_frames_nvdec_split, nvdec_available, nvdec_status,  # noqa: F401
                    upright_batch)  # noqa: F401 - re-exported: gpu_scorer was their home
from .split_decode import iter_frames_split

log = logging.getLogger(__name__)


def iter_frames_uploaded(path, policy, info, stats, chunk=16, device="cuda", colors="seed", split="1", guard=None,
                         planes: bool = False):
    """PyAV decode (`split` key-frame ranges: split_decode.py), one host-to-device copy per chunk (per run of
    one frame form, where the size or format changes mid-chunk: a batch tensor holds one size). `planes`: frames
    travel as their decoded planes where the device conversion reproduces the CPU's BGR (frame_planes.py)."""
    import torch

    from .frame_planes import Planes, form_runs, planes_or_bgr

    form = planes_or_bgr if planes else None
    for idx, frames in iter_frames_split(path, policy, info, stats, chunk, guard=guard, colors=colors, split=split,
                                         form=form):
        for run_idx, run in form_runs(idx, frames):
            if isinstance(run[0], Planes):
                yield run_idx, planes_to_bgr(run, device)
            else:
                yield run_idx, torch.from_numpy(np.stack(run)).to(device, non_blocking=True)


class TorchScorer(Scorer):
    """A Scorer whose frames, crops and faces are torch tensors on the runtime's device."""

    # locate workers (detector, NMS, face choice, crops) run beside the classifier: the classifier's CUDA graphs
    # are captured when the runtime is made, in thread-local mode, and replayed under a lock
    overlap = True

    def __init__(self, runtime, options: ScoreOptions, model_id=None, use_nvdec: bool | None = None):
        super().__init__(runtime, options, model_id)
        dev = runtime.device
        # PyAV's frames reach the device as planes there (one conversion on the GPU), as BGR on the CPU (swscale
        # is faster than torch's gathers on CPU cores)
        self.planes = dev.type == "cuda"
        if dev.type == "cuda" and (use_nvdec if use_nvdec is not None else nvdec_available()):
            self.iter_frames = lambda *a, **kw: iter_frames_nvdec_split(*a, gpu_id=dev.index or 0, split=self.opt.split,
                                                                        **kw)
            self.decoder = "nvdec"
        else:
            self.iter_frames = self.iter_frames_pyav
            self.decoder = "pyav"
        import torch

        self._torch = torch
        self._streams: dict = {}
        log.info("torch runtime on %s (%s), decoder %s%s, %d locate worker(s)", dev,
                 "fp16" if runtime.fp16 else "fp32", self.decoder,
                 f" + {self.cpu_decoders(self.decoder == 'nvdec')} CPU decoder(s)" if self.opt.cpu_decoders != "0" else "",
                 self.locate_workers())

    def iter_frames_pyav(self, path, policy, info, stats, chunk=16, colors="seed", guard=None, split=None):
        """PyAV's frames on the device (`iter_frames_uploaded`): the main decoders' without NVDEC (`--split`),
        the joining CPU decoders' (one range: each takes a whole video)."""
        return iter_frames_uploaded(path, policy, info, stats, chunk, device=self.rt.device, colors=colors,
                                    split=self.opt.split if split is None else split, guard=guard, planes=self.planes)

    def decoders(self) -> list:
        """`decode_workers` main decoders (NVDEC sessions, else PyAV), then the CPU decoders that join them."""
        nvdec = self.decoder == "nvdec"
        main = [Decoder(self.decoder, self.iter_frames)] * self.opt.decode_workers
        join = Decoder("pyav", partial(self.iter_frames_pyav, split="1"), helper=True)
        return main + [join] * self.cpu_decoders(nvdec)

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
