"""Decoded frames kept as their YUV planes, to be turned into BGR on the scorer's device.

A scorer on a GPU that decodes with PyAV (no NVDEC, or CPU decoders joining NVDEC: engine.Decoder) need not
convert frames to BGR on the CPU and copy three bytes a pixel to the device: it can copy the decoded planes
(1.5 bytes a pixel at 8 bits) and convert them there with the same torch function that converts NVDEC's
surfaces (gpu_colours.planes_to_bgr -> nv12_to_bgr). The BGR is the CPU path's, byte for byte
(tests/test_frame_planes.py), because that function reproduces `frame_colours.frame_to_bgr`:

- 8-bit 4:2:0 (yuv420p, yuvj420p) at an even width and height: swscale's unscaled converter;
- 9- to 16-bit 4:2:0 (yuv420p10le, yuv420p12le, ...): the integer model of OpenCV's scaled path.

Every other frame (odd 8-bit sizes, 4:2:2, 4:4:4, grey, RGB, `--colors stream`) stays BGR from the CPU
(`decode.bgr_frame`), so a stream that changes format mid-way gives runs of both kinds (`form_runs`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .decode import bgr_frame
from .frame_colours import SEED_8BIT_420, _plane, high_depth_420


@dataclass(frozen=True)
class Planes:
    """One decoded 4:2:0 frame as one buffer: the luma plane (height x width samples), then U and V
    (ceil(height/2) x ceil(width/2) each), uint8 or uint16 (the samples as decoded, low bits)."""

    data: np.ndarray
    height: int  # coded (before the display rotation)
    width: int
    bits: int
    full_range: bool
    rotation: int

    @property
    def shape(self) -> Tuple[int, int, int]:
        """The upright BGR frame's shape, as `decode.bgr_frame` would give it."""
        k = int(round(self.rotation / 90.0)) % 4
        return (self.width, self.height, 3) if k % 2 else (self.height, self.width, 3)

    @property
    def form(self) -> tuple:
        """Frames of one form stack into one batch and convert as one."""
        return ("planes", self.height, self.width, self.bits, self.full_range, self.rotation)


def frame_planes(frame, rotation: int) -> Optional[Planes]:
    """The frame's planes if the device conversion reproduces its CPU BGR (module docstring), else None."""
    w, h = frame.width, frame.height
    if frame.format.name in SEED_8BIT_420 and w % 2 == 0 and h % 2 == 0:
        bits, dtype = 8, np.uint8
    else:
        bits, dtype = high_depth_420(frame), np.dtype("<u2")
        if bits is None:
            return None
    cw, ch = (w + 1) // 2, (h + 1) // 2
    data = np.empty(h * w + 2 * ch * cw, dtype=dtype)
    data[:h * w].reshape(h, w)[:] = _plane(frame, 0, w, h, dtype)
    data[h * w:h * w + ch * cw].reshape(ch, cw)[:] = _plane(frame, 1, cw, ch, dtype)
    data[h * w + ch * cw:].reshape(ch, cw)[:] = _plane(frame, 2, cw, ch, dtype)
    return Planes(data, h, w, bits, frame.format.name.startswith("yuvj"), int(rotation))


def planes_or_bgr(frame, colors: str, rotation: int):
    """A decode.FrameForm: the frame's Planes where its colour rule is the seed's and the device conversion
    reproduces it; else the CPU's upright BGR."""
    if colors == "seed":
        p = frame_planes(frame, rotation)
        if p is not None:
            return p
    return bgr_frame(frame, colors, rotation)


def form_of(frame) -> tuple:
    return frame.form if isinstance(frame, Planes) else ("bgr",) + tuple(frame.shape)


def form_runs(indices: Sequence[int], frames: Sequence[Any]) -> Iterator[Tuple[List[int], List[Any]]]:
    """Split a chunk where the frames' form changes (size, kind, bit depth, range, rotation)."""
    indices = list(indices)
    start = 0
    for k in range(1, len(frames) + 1):
        if k == len(frames) or form_of(frames[k]) != form_of(frames[start]):
            yield indices[start:k], list(frames[start:k])
            start = k
