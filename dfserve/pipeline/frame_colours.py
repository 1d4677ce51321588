"""Frame colours: one definition of the BGR a decoded YUV frame becomes, "as the seed's OpenCV reads it".

The seed apps read frames with `cv2.VideoCapture`. OpenCV's FFmpeg reader (videoio/src/cap_ffmpeg_impl.hpp,
`retrieveFrame`) converts every frame with `sws_getCachedContext(coded_w, coded_h, <native pix_fmt>, coded_w,
coded_h, BGR24, SWS_BICUBIC)` and `sws_scale`, and never calls `sws_setColorspaceDetails`. So:

- the matrix is swscale's default, BT.601, whatever the stream's colour tags say;
- the range is the one the pixel format implies: full for the `yuvj*` formats (H.264 / MJPEG full-range
  streams decode to them), limited for every other YUV format, even one tagged `color_range=pc`;
- 8-bit 4:2:0 at an even height takes swscale's unscaled converter (x86: `ff_yuv_420_bgr24_ssse3`): each 2x2
  block shares one chroma sample, and the arithmetic is 16-bit fixed point (`seed_8bit_terms`). PyAV's
  `reformat(format="bgr24", src_colorspace="ITU601", interpolation="BICUBIC", src_color_range="MPEG")` runs the
  same converter and equals OpenCV 4.11 bit for bit (tests/test_colours.py);
- 9- to 16-bit 4:2:0 (10 and 12 in practice) take swscale's scaled path: every sample taken to 15 bits, chroma upsampled vertically by
  a 4-tap bicubic filter (B=0, C=0.6, chroma sited between the luma rows) in 12-bit weights, shared by pixel
  pairs across; rows but the last two through the x86 MMX vertical scaler (each tap a 16-bit multiply-high, then
  a rounder) and output stage (`yuv2bgr24_X`: the multiply-high terms of the 8-bit converter, `mmx_bgr`), the
  last two through the C ones (32-bit sums rounded to 8 bits, then swscale's lookup tables, `c_output_tables`).
  `seed_high_depth_bgr` reproduces both in integers: on random planes (rawvideo clips, so the samples are known;
  9 to 16 bits, every sample value, even values above the bit depth as a crafted stream may
  hold) it equals OpenCV 4.11 bit for bit at even widths and even heights of 14 rows or more,
  and on the encoded clips of tests/test_colours.py; OpenCV 4.5.5 (FFmpeg 4.4), 4.7 and 4.10 give the same frames
  (checked once, docs/contract.md). The filter's weights and rounder were fitted there
  (CHROMA_TAPS_*: the bicubic taps normalised by swscale's error diffusion; the first rows' filters differ and are
  tabled as measured). Not reproduced: odd widths (swscale then forces full horizontal chroma interpolation and
  another output function; OpenCV's frames differ by 2+ levels everywhere), odd heights and heights under 14.
  The float64 model used before (the same filter and the BT.601 matrix, rounded to nearest) was within 3-4 grey
  levels, but green 1.2 levels high on average, which moved a sensitive checkpoint's p_fake by 0.05 on a 10-bit
  clip (tests/test_boxes.py). OpenCV never writes the last 3 rows of 10/12-bit frames whose coded
  height exceeds the shown one (HEVC 1080p, coded as 1088): they hold whatever its buffer held (black in a fresh
  process, other memory later), so they are not reproduced; every other row is. PyAV's swscale (FFmpeg 8) with BT.601 and bicubic differs by up to 21 levels in 62 % of pixels, so
  it is not used for these formats. Other layouts (4:2:2 and 4:4:4 at 8 and 10 bits, full range, grey) go
  through PyAV's swscale with BT.601: equal to OpenCV's frames (tests/test_colours.py, random samples).

`colors="stream"` keeps PyAV's default instead: the stream's own matrix and range (bilinear chroma).

`frame_to_bgr` is the one CPU entry point (pipeline/decode.py); pipeline/gpu_colours.py converts NVDEC's NV12 /
P016 planes to the same BGR with torch, from the same constants.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Tuple

import numpy as np

from .. import spec
from ..errors import UsageError

# libswscale/yuv2rgb.c ff_yuv2rgb_coeffs, BT.601 row: {crv, cbu, cgu, cgv} in 16.16.
SWS_BT601 = (104597, 132201, 25675, 53279)
# swscale's bicubic filter (utils.c initFilter, SWS_BICUBIC with default params): B = 0, C = 0.6.
BICUBIC_B, BICUBIC_C = 0.0, 0.6
# 10/12-bit 4:2:0 (`seed_high_depth_bgr`): swscale 5.1's scaled path, measured against OpenCV 4.11 on random planes
# (rawvideo clips, tests/test_colours.py). Its vertical chroma filter, in 12-bit weights, for even output rows over
# chroma rows i-2..i+1 (row 2i; reversed over rows i-1..i+2 for row 2i+1): the bicubic taps normalised with
# swscale's error diffusion; the first rows' filters differ (measured); MMX_ROUNDER is added to every 11-bit sum.
CHROMA_TAPS_EVEN = (-115, 985, 3572, -346)
CHROMA_TAPS_TOP = {0: ((0, 4432), (1, -336)), 2: ((0, 959), (1, 3473), (2, -336))}
MMX_ROUNDER = 4
C_PATH_ROWS = 2  # swscale writes the last two rows with its C output (`c_output_tables`), not its MMX one
C_TABLE_HEADROOM = 512  # YUVRGB_TABLE_HEADROOM and YUVRGB_TABLE_LUMA_HEADROOM of swscale 5.1
FULL_RANGE_FORMATS = {"yuvj420p", "yuvj422p", "yuvj444p", "yuvj440p", "yuvj411p"}
SEED_8BIT_420 = {"yuv420p", "yuvj420p"}


def check_colors(colors: str) -> str:
    if colors not in spec.COLORS:
        raise UsageError(f"--colors must be one of {', '.join(spec.COLORS)}, got {colors!r}")
    return colors


# ------------------------------------------------------------------------------------------ 8-bit 4:2:0
def _round_to_int16(f: int) -> int:
    return max(-0x8000, min(0x7FFF, (f + (1 << 15)) >> 16))


def _div_trunc(a: int, b: int) -> int:
    """C's integer division (toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def seed_8bit_terms(full_range: bool = False) -> dict:
    """The per-sample terms of swscale's unscaled 8-bit YUV 4:2:0 -> BGR24 converter (x86 SSSE3), BT.601.

    Coefficients as yuv2rgb.c `ff_yuv2rgb_c_init_tables` sets them (contrast and saturation 1, brightness 0),
    shifted up 13 bits for the 16-bit lanes; each term is one multiply-high (`pmulhw`: (a * b) >> 16) of a sample
    carrying 3 extra bits. Returns int32 arrays of 256: y, ub, ug, vg, vr, so that
    B = clip(y[Y] + ub[U]), G = clip(y[Y] + ug[U] + vg[V]), R = clip(y[Y] + vr[V]), clipped to 0..255.
    """
    i = np.arange(256, dtype=np.int64)
    b, g, r, t = mmx_bgr(i << 3, i << 3, i << 3, full_range, terms=True)  # samples carrying 3 extra bits
    return {k: v.astype(np.int32) for k, v in t.items()}


def mmx_coefficients(full_range: bool = False) -> tuple:
    """(y_coeff, y_offset, {vr, ub, ug, vg}): swscale's BT.601 coefficients in its 16-bit SIMD lanes, as yuv2rgb.c
    `ff_yuv2rgb_c_init_tables` sets them (contrast and saturation 1, brightness 0), shifted up 13 bits."""
    cy, oy, (crv, cbu, cgu, cgv) = sws_coefficients(full_range)
    coeff = {k: _round_to_int16(v << 13) for k, v in (("vr", crv), ("ub", cbu), ("ug", cgu), ("vg", cgv))}
    return _round_to_int16(cy << 13), _round_to_int16(oy << 3), coeff


def sws_coefficients(full_range: bool = False) -> tuple:
    """(cy, oy, (crv, cbu, cgu, cgv)) in 16.16 as `ff_yuv2rgb_c_init_tables` starts from them: BT.601, the range
    scaled in (contrast and saturation 1, brightness 0); both outputs (SIMD lanes, C tables) derive from these."""
    crv, cbu, cgu, cgv = SWS_BT601[0], SWS_BT601[1], -SWS_BT601[2], -SWS_BT601[3]
    cy, oy = 1 << 16, 0
    if not full_range:
        cy, oy = _div_trunc(cy * 255, 219), 16 << 16
    else:
        crv, cbu, cgu, cgv = (_div_trunc(c * 224, 255) for c in (crv, cbu, cgu, cgv))
    return cy, oy, (crv, cbu, cgu, cgv)


def mmx_bgr(y, u, v, full_range: bool = False, terms: bool = False):
    """(B, G, R) before clipping, from samples scaled to 8 bits with 3 extra bits (11-bit: 8 x Y, 8 x U, 8 x V),
    each term one multiply-high (`pmulhw`: (a * b) >> 16) in 16-bit lanes: swscale's x86 SIMD output arithmetic
    (the unscaled 8-bit converter and the scaled path's `yuv2bgr24_X` alike). Integer numpy arrays or torch
    tensors (int64); `terms=True` also returns the four terms {y, ub, ug, vg, vr}."""
    y_coeff, y_offset, c = mmx_coefficients(full_range)
    us, vs = u - 1024, v - 1024
    t = {"y": ((y - y_offset) * y_coeff) >> 16, "ub": (us * c["ub"]) >> 16, "ug": (us * c["ug"]) >> 16,
         "vg": (vs * c["vg"]) >> 16, "vr": (vs * c["vr"]) >> 16}
    b, g, r = t["y"] + t["ub"], t["y"] + t["ug"] + t["vg"], t["y"] + t["vr"]
    return (b, g, r, t) if terms else (b, g, r)


# ------------------------------------------------------------------------------------- 10/12-bit 4:2:0
def _cubic(x: float) -> float:
    b, c = BICUBIC_B, BICUBIC_C
    x = abs(x)
    if x < 1:
        return ((12 - 9 * b - 6 * c) * x ** 3 + (-18 + 12 * b + 6 * c) * x ** 2 + (6 - 2 * b)) / 6
    if x < 2:
        return ((-b - 6 * c) * x ** 3 + (6 * b + 30 * c) * x ** 2 + (-12 * b - 48 * c) * x + (8 * b + 24 * c)) / 6
    return 0.0


def chroma_up_weights() -> tuple:
    """The bicubic taps of the vertical 2x chroma upsampling, for even output rows (chroma rows i-2..i+1 for row
    2i), summing to 1: CHROMA_TAPS_EVEN is them in 12 bits (tests/test_colours.py)."""
    w = [_cubic(d) for d in (1.75, 0.75, 0.25, 1.25)]
    s = sum(w)
    return tuple(v / s for v in w)


@lru_cache(maxsize=64)
def chroma_taps(chroma_rows: int, rows: int) -> Tuple[np.ndarray, np.ndarray]:
    """(index, weight), int64 [rows, 4] each: the chroma rows and 12-bit weights swscale's vertical filter gives
    each output row (CHROMA_TAPS_EVEN / reversed for odd rows, CHROMA_TAPS_TOP, taps beyond the plane merged
    into its edge row; unused taps weigh 0)."""
    idx = np.zeros((rows, 4), np.int64)
    wt = np.zeros((rows, 4), np.int64)
    for r in range(rows):
        i = r // 2
        if r in CHROMA_TAPS_TOP:
            taps = CHROMA_TAPS_TOP[r]
        elif r % 2 == 0:
            taps = tuple(zip(range(i - 2, i + 2), CHROMA_TAPS_EVEN))
        else:
            taps = tuple(zip(range(i - 1, i + 3), CHROMA_TAPS_EVEN[::-1]))
        merged: dict = {}
        for row, weight in taps:
            row = min(max(row, 0), chroma_rows - 1)
            merged[row] = merged.get(row, 0) + weight
        for j, (row, weight) in enumerate(sorted(merged.items())):
            idx[r, j], wt[r, j] = row, weight
    idx.flags.writeable = wt.flags.writeable = False
    return idx, wt


@lru_cache(maxsize=2)
def c_output_tables(full_range: bool = False) -> dict:
    """swscale's C output tables for BGR24 (yuv2rgb.c `ff_yuv2rgb_c_init_tables`, `fill_table`, `fill_gv_table`):
    `y` (the luma ramp) and the per-sample offsets into it, rV, gU, bU, gV, indexed by an 8-bit sample plus
    C_TABLE_HEADROOM, so that B = y[bU[U] + Y], G = y[gU[U] + gV[V] + Y], R = y[rV[V] + Y]."""
    cy, oy, coeffs = sws_coefficients(full_range)
    crv, cbu, cgu, cgv = (_div_trunc(c * (1 << 16) + 0x8000, cy) for c in coeffs)  # scaled by cy
    head = C_TABLE_HEADROOM
    start = -(384 << 16) - head * cy - oy
    ramp = np.clip((start + np.arange(1024 + 2 * head, dtype=np.int64) * cy + 0x8000) >> 16, 0, 255)
    yoffs = (384 if full_range else 326) + head
    sample = np.clip(np.arange(256 + 2 * head, dtype=np.int64) - head, 0, 255)
    out = {"y": ramp, "gV": -(cgv >> 9) + ((sample * cgv) >> 16)}
    for k, c in (("rV", crv), ("gU", cgu), ("bU", cbu)):
        out[k] = yoffs - (c >> 9) + ((sample * c) >> 16)
    return out


def to_15_bits(samples, bits: int):
    """swscale's horizontal pass on `bits`-bit samples (its x86 hScale, a tap of weight 1 << 14): the sample as a
    signed 16-bit lane below 16 bits, (s << 14) >> (bits - 1), saturated to 16 bits. In range that is
    s << (15 - bits); samples above their bit depth (a crafted stream) come out as OpenCV's do (tested over every
    uint16 value). Integer numpy arrays (int32 or wider) or torch tensors."""
    if bits < 16:
        samples = (samples ^ 0x8000) - 0x8000  # 0..65535 read as int16
    c15 = (samples << 14) >> (bits - 1)
    return c15.clip(-32768, 32767) if isinstance(c15, np.ndarray) else c15.clamp(-32768, 32767)


@lru_cache(maxsize=8)
def _luma_terms(bits: int) -> np.ndarray:
    """mmx_bgr's luma term for every 16-bit sample value (int16), `bits`-bit samples: to 15 bits, one multiply-high
    by 4096 (a vertical tap of weight 1.0), the rounder, the term; looked up per pixel instead of computed."""
    y11 = (to_15_bits(np.arange(1 << 16, dtype=np.int64), bits) >> 4) + MMX_ROUNDER
    return mmx_bgr(y11, 1024, 1024, terms=True)[3]["y"].astype(np.int16)


def seed_high_depth_bgr(y: np.ndarray, u: np.ndarray, v: np.ndarray, bits: int) -> np.ndarray:
    """BGR uint8 [H,W,3] from 4:2:0 planes of `bits`-bit samples (y [H,W], u and v [ceil(H/2), ceil(W/2)]), as
    OpenCV 4.11's swscale converts them (module docstring): bit for bit at even widths and even heights of 14 rows
    or more.

    Integers throughout (every product fits int32); the luma term is a table lookup, the chroma terms are computed
    at chroma resolution and repeated over their pixel pairs."""
    import cv2

    h, w = y.shape
    cw = u.shape[1]
    idx, wt = chroma_taps(u.shape[0], h)
    k = min(C_PATH_ROWS, h)
    u15, v15 = (to_15_bits(a.astype(np.int32), bits) for a in (u, v))
    wt32 = wt.astype(np.int32)
    rows = slice(0, h - k)  # MMX: each tap a multiply-high, then the rounder
    u11, v11 = (sum((c[idx[rows, j]] * wt32[rows, j, None]) >> 16 for j in range(4)) + MMX_ROUNDER for c in (u15, v15))
    _, _, _, t = mmx_bgr(0, u11, v11, terms=True)
    yt = np.take(_luma_terms(bits), y[rows])
    # each chroma term over its pixel pair, added to the luma term with saturation to 0..255 (packuswb) by OpenCV
    planes = [cv2.add(yt, np.repeat(term.astype(np.int16), 2, axis=1)[:, :w], dtype=cv2.CV_8U)
              for term in (t["ub"], t["ug"] + t["vg"], t["vr"])]  # B, G, R
    mmx_rows = cv2.merge(planes) if h > k else np.empty((0, w, 3), np.uint8)
    rows = slice(h - k, h)  # C: the taps summed in 32 bits, rounded to 8 bits, then the tables
    c_u, c_v = ((((1 << 18) + sum(c[idx[rows, j]] * wt32[rows, j, None] for j in range(4))) >> 19)
                + C_TABLE_HEADROOM for c in (u15, v15))
    c_u, c_v = (np.repeat(a, 2, axis=1)[:, :w] for a in (c_u, c_v))
    y8 = (to_15_bits(y[rows].astype(np.int32), bits) * 4096 + (1 << 18)) >> 19
    tb = c_output_tables()
    c_rows = np.stack([tb["y"][tb["bU"][c_u] + y8], tb["y"][tb["gU"][c_u] + tb["gV"][c_v] + y8],
                       tb["y"][tb["rV"][c_v] + y8]], axis=-1).astype(np.uint8)
    return np.concatenate([mmx_rows.reshape(h - k, w, 3), c_rows])


def _plane(frame, k: int, width: int, height: int, dtype) -> np.ndarray:
    p = frame.planes[k]
    item = np.dtype(dtype).itemsize
    arr = np.frombuffer(memoryview(p), dtype=dtype).reshape(-1, p.line_size // item)
    return arr[:height, :width]


def high_depth_420(frame):
    """The bit depth if the frame is planar 4:2:0 YUV of 9-16 bits (little endian), else None (all of them through
    the integer model: equal to OpenCV's frames at 9, 10, 12, 14 and 16 bits, tests/test_colours.py)."""
    name = frame.format.name
    if not name.startswith("yuv420p") or not name.endswith("le"):
        return None
    bits = frame.format.components[0].bits
    return bits if 8 < bits <= 16 else None


def frame_to_bgr(frame, colors: str = spec.DEFAULT_COLORS) -> np.ndarray:
    """One decoded PyAV VideoFrame as BGR uint8 [H,W,3] (not yet turned upright), by the colour rule `colors`."""
    if colors == "stream":
        return frame.to_ndarray(format="bgr24")
    bits = high_depth_420(frame)
    if bits is not None:
        w, h = frame.width, frame.height
        cw, ch = (w + 1) // 2, (h + 1) // 2
        return seed_high_depth_bgr(_plane(frame, 0, w, h, "<u2"), _plane(frame, 1, cw, ch, "<u2"),
                                   _plane(frame, 2, cw, ch, "<u2"), bits)
    return frame.reformat(format="bgr24", src_colorspace="ITU601", interpolation="BICUBIC",
                          src_color_range="MPEG").to_ndarray()
