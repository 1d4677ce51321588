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
- 10- and 12-bit 4:2:0 take swscale's scaled path: chroma upsampled vertically by a 4-tap bicubic filter
  (B=0, C=0.6, chroma sited between the luma rows), shared by pixel pairs across, then swscale 5.1's x86 MMX
  output stage (`yuv2bgr24_X`, 16-bit multiply-high arithmetic; the C table path for the last two rows). This
  module models it in float64 (`seed_high_depth_bgr`): the same filter, the BT.601 limited-range matrix, rounding
  to nearest. The MMX stage's own rounding is not emulated: measured against OpenCV on the generated clips, the
  model is within 3 grey levels at 10 bits and 4 at 12 bits, but about 95 % of pixels are off by 1 or more
  (green is about 1 level higher on average); PyAV's swscale (FFmpeg 8) with BT.601 and bicubic differs by up
  to 21 levels in 62 % of pixels there, so it is not used for these formats. Other high-bit-depth layouts (4:2:2,
  4:4:4) go through PyAV's swscale with BT.601, not checked against OpenCV.

`colors="stream"` keeps PyAV's default instead: the stream's own matrix and range (bilinear chroma).

`frame_to_bgr` is the one CPU entry point (pipeline/decode.py); pipeline/gpu_colours.py converts NVDEC's NV12 /
P016 planes to the same BGR with torch, from the same constants.
"""
from __future__ import annotations

import numpy as np

from .. import spec
from ..errors import UsageError

# libswscale/yuv2rgb.c ff_yuv2rgb_coeffs, BT.601 row: {crv, cbu, cgu, cgv} in 16.16.
SWS_BT601 = (104597, 132201, 25675, 53279)
# swscale's bicubic filter (utils.c initFilter, SWS_BICUBIC with default params): B = 0, C = 0.6.
BICUBIC_B, BICUBIC_C = 0.0, 0.6
# BT.601 luma weights (Kr, Kb) for the float model of the high-bit-depth path.
BT601_KR, BT601_KB = 0.299, 0.114
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
    crv, cbu, cgu, cgv = SWS_BT601[0], SWS_BT601[1], -SWS_BT601[2], -SWS_BT601[3]
    cy, oy = 1 << 16, 0
    if not full_range:
        cy, oy = _div_trunc(cy * 255, 219), 16 << 16
    else:
        crv, cbu, cgu, cgv = (_div_trunc(c * 224, 255) for c in (crv, cbu, cgu, cgv))
    y_coeff, y_offset = _round_to_int16(cy << 13), _round_to_int16(oy << 3)
    coeff = {k: _round_to_int16(v << 13) for k, v in (("vr", crv), ("ub", cbu), ("ug", cgu), ("vg", cgv))}
    i = np.arange(256, dtype=np.int64)
    ys = (i << 3) - y_offset  # within int16 for every sample
    cs = (i << 3) - 1024
    out = {"y": (ys * y_coeff) >> 16}
    for k, c in coeff.items():
        out[k] = (cs * c) >> 16
    return {k: v.astype(np.int32) for k, v in out.items()}


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
    """The 4 taps of the vertical 2x chroma upsampling, for even output rows (chroma rows i-2..i+1 for row 2i);
    odd rows (2i+1) use them reversed over chroma rows i-1..i+2. Chroma sits between its two luma rows."""
    w = [_cubic(d) for d in (1.75, 0.75, 0.25, 1.25)]
    s = sum(w)
    return tuple(v / s for v in w)


def bt601_limited(y, u, v):
    """(B, G, R) float from 8-bit-scaled Y, U, V (float arrays or tensors): BT.601, limited range."""
    kr, kb = BT601_KR, BT601_KB
    kg = 1.0 - kr - kb
    yy = (y - 16.0) * (255.0 / 219.0)
    cb = (u - 128.0) * (255.0 / 224.0)
    cr = (v - 128.0) * (255.0 / 224.0)
    b = yy + (2.0 * (1.0 - kb)) * cb
    g = yy - (2.0 * kb * (1.0 - kb) / kg) * cb - (2.0 * kr * (1.0 - kr) / kg) * cr
    r = yy + (2.0 * (1.0 - kr)) * cr
    return b, g, r


def _up2_rows(c: np.ndarray) -> np.ndarray:
    w0, w1, w2, w3 = chroma_up_weights()
    h = c.shape[0]
    p = np.concatenate([c[:1], c[:1], c, c[-1:], c[-1:]])  # chroma row k is p[k + 2]
    even = w0 * p[0:h] + w1 * p[1:h + 1] + w2 * p[2:h + 2] + w3 * p[3:h + 3]
    odd = w3 * p[1:h + 1] + w2 * p[2:h + 2] + w1 * p[3:h + 3] + w0 * p[4:h + 4]
    out = np.empty((2 * h,) + c.shape[1:], dtype=np.float64)
    out[0::2], out[1::2] = even, odd
    return out


def seed_high_depth_bgr(y: np.ndarray, u: np.ndarray, v: np.ndarray, bits: int) -> np.ndarray:
    """BGR uint8 [H,W,3] from 4:2:0 planes of `bits`-bit samples (y [H,W], u and v [ceil(H/2), ceil(W/2)])."""
    h, w = y.shape
    scale = float(1 << (bits - 8))
    uu = np.repeat(_up2_rows(u.astype(np.float64) / scale), 2, axis=1)[:h, :w]
    vv = np.repeat(_up2_rows(v.astype(np.float64) / scale), 2, axis=1)[:h, :w]
    b, g, r = bt601_limited(y.astype(np.float64) / scale, uu, vv)
    out = np.empty((h, w, 3), dtype=np.uint8)
    for k, ch in enumerate((b, g, r)):
        out[..., k] = np.clip(np.floor(ch + 0.5), 0, 255)
    return out


def _plane(frame, k: int, width: int, height: int, dtype) -> np.ndarray:
    p = frame.planes[k]
    item = np.dtype(dtype).itemsize
    arr = np.frombuffer(memoryview(p), dtype=dtype).reshape(-1, p.line_size // item)
    return arr[:height, :width]


def high_depth_420(frame):
    """The bit depth if the frame is planar 4:2:0 YUV of 9-16 bits (little endian), else None."""
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
