"""The seed's face resize, owned by dfserve: one definition, a numpy and a torch implementation.

The seed projects resized each face crop to 112x112 with the Pillow of their time (`transforms.Resize`
on a PIL image: antialiased bilinear on an 8-bit image). That is, exactly (libImaging/Resample.c,
Pillow 4.x-12.x; see spec.RESIZE_*):

- two separable passes, the horizontal one first, an 8-bit image between them;
- per output pixel, `center = (i + 0.5) * in/out`, `support = max(in/out, 1)`, taps
  `x in [int(center - support + 0.5) clipped to >= 0, int(center + support + 0.5) clipped to <= in)`,
  weights `max(0, 1 - |(x - center + 0.5) / max(in/out, 1)|)` in double, summed tap by tap and
  divided by that sum;
- each weight in fixed point, `int(0.5 + w * 2**22)`; an output is
  `(sum(pixel * weight) + 2**21) >> 22`, clipped to 0..255 (never reached with these weights).

Pillow 13 runs the vertical pass first when the height shrinks much more than the width, so the
installed Pillow no longer gives the seed's pixels; nothing here calls Pillow. Both implementations
do the integer arithmetic exactly (numpy in float64: every product and partial sum is a multiple of
2**-22 below 2**9 once the weights are scaled by 2**-22; torch in int32: sums stay below 2**31), so they
agree with each other and with Pillow 12 bit for bit (tests/test_resize.py, golden data from Pillow 12).

numpy (`resize_uint8`): each pass is one batched BLAS product over bands of the weight matrix, on channel planes
(blocks of output pixels and the input span they read, as strided views: no gather copies); the blocks'
stride is chosen per size for the narrowest span.
torch (`resize_crops_torch`): crops of different sizes cut from a batch of frames on any device, each
pass a few gathers (one per tap of the widest window, `tap_windows`) and int32 multiply-adds for the
whole batch: Pillow's own integer arithmetic, so bit-exact on every device, with no dense weight matrix.
Whole frames that shrink by a whole factor (the detector's input: 720p, 1080p, 1440p -> 640x360): the same
definition as one small integer filter per pass (`whole_factor`), in OpenCV (`downscale_whole`, 2.3x faster
than Pillow on a 720p frame) and in torch (`downscale_frames_torch`, strided convolutions, for the GPU).
"""
from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from . import spec
from .errors import ImageShapeError

ONE = 1 << spec.RESIZE_PRECISION_BITS  # 1.0 in fixed point
HALF = 1 << (spec.RESIZE_PRECISION_BITS - 1)  # the rounding offset
BAND = 8  # output pixels per band of the numpy implementation's banded products (fastest measured)


def _bilinear(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    return np.where(a < 1.0, 1.0 - a, 0.0)


@functools.lru_cache(maxsize=4096)
def fixed_point_weights(in_size: int, out_size: int) -> np.ndarray:
    """int64 [out_size, in_size]: output pixel i = (row i . input line + HALF) >> PRECISION_BITS.

    Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the bilinear filter and the box
    (0, in_size), vectorised over output pixels with the same double operations in the same order
    (the weight sum is accumulated tap by tap, as the C loop does)."""
    if in_size < 1 or out_size < 1:
        raise ImageShapeError(f"resize: sizes must be >= 1, got in_size={in_size}, out_size={out_size}")
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = spec.RESIZE_FILTER_SUPPORT * filterscale
    ksize = int(np.ceil(support)) * 2 + 1
    inv_filterscale = 1.0 / filterscale
    center = 0.0 + (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    xmin = np.maximum(np.trunc(center - support + 0.5), 0.0).astype(np.int64)
    count = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.zeros((out_size, ksize), np.float64)
    total = np.zeros(out_size, np.float64)
    for t in range(ksize):
        w = np.where(t < count, _bilinear(((xmin + t).astype(np.float64) - center + 0.5) * inv_filterscale), 0.0)
        taps[:, t] = w
        total = total + w  # tap by tap, as Pillow sums (adding 0.0 past the last tap changes nothing)
    taps = np.where(total[:, None] != 0.0, taps / np.where(total == 0.0, 1.0, total)[:, None], taps)
    fixed = np.trunc(0.5 + taps * float(ONE)).astype(np.int64)  # bilinear weights are never negative
    out = np.zeros((out_size, in_size), np.int64)
    rows = np.repeat(np.arange(out_size), ksize).reshape(out_size, ksize)
    cols = xmin[:, None] + np.arange(ksize)
    used = np.arange(ksize)[None, :] < count[:, None]
    out[rows[used], cols[used]] = fixed[used]
    return out


@dataclass(frozen=True)
class _Band:
    """One pass of the numpy implementation for (in_size, out_size): output pixels in blocks of BAND. The
    pass's lines sit in a buffer of `padded` lines, `lead` zero lines before the input and zeros after it;
    block g reads buffer lines [base + g * step, ... + span)."""

    step: int
    span: int
    lead: int
    padded: int
    base: int
    weights: np.ndarray  # float64 [blocks, BAND, span], fixed-point weights / 2**PRECISION_BITS
    clip: bool  # whether 255 can be exceeded (only for inputs far larger than any frame)


@functools.lru_cache(maxsize=4096)
def _band(in_size: int, out_size: int) -> _Band:
    m = fixed_point_weights(in_size, out_size)
    blocks = -(-out_size // BAND)
    nz = m != 0
    first = nz.argmax(1)
    last = in_size - 1 - nz[:, ::-1].argmax(1)
    g = np.arange(blocks)
    lo = np.array([first[k * BAND:(k + 1) * BAND].min() for k in g], np.int64)
    hi = np.array([last[k * BAND:(k + 1) * BAND].max() + 1 for k in g], np.int64)
    # block g reads input lines [off + g * step, ... + span), off possibly negative (zero lines in front): the
    # integer step next to BAND * in/out that needs the narrowest span, i.e. the fewest multiplications by
    # zero (a step fixed at block 1's start, as before, made the span up to 40 % wider on face sizes)
    choices = []
    for step in sorted({int(np.floor(BAND * in_size / out_size)), int(np.ceil(BAND * in_size / out_size))}):
        off = int((lo - g * step).min())
        choices.append((int((hi - off - g * step).max()), step, off))
    span, step, off = min(choices)
    w = np.zeros((blocks, BAND, span), np.float64)
    for k in range(blocks):
        a = off + k * step
        rows = m[k * BAND:(k + 1) * BAND, max(a, 0):a + span]
        w[k, :rows.shape[0], max(-a, 0):max(-a, 0) + rows.shape[1]] = rows
    w *= 1.0 / ONE  # exact: a power of two
    lead = max(-off, 0)
    padded = max(lead + off + (blocks - 1) * step + span, lead + in_size)
    clip = 255 * int(m.sum(1).max()) + HALF >= (256 << spec.RESIZE_PRECISION_BITS)
    return _Band(step, span, lead, padded, lead + off, w, clip)


_scratch = threading.local()


def _buffer(slot: str, shape: Tuple[int, ...]) -> np.ndarray:
    """A float64 work array of `shape`, reused by this thread (fresh arrays of this size come from mmap and
    cost more in page faults than the arithmetic: measured 3x slower per crop)."""
    need = math.prod(shape)
    buf = getattr(_scratch, slot, None)
    if buf is None or buf.size < need:
        buf = np.empty(max(need, 1 << 16), np.float64)
        setattr(_scratch, slot, buf)
    return buf[:need].reshape(shape)


def _check(img: np.ndarray) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim not in (2, 3):
        got = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ImageShapeError(f"resize: the image must be a uint8 array [H,W] or [H,W,C], got {got}")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise ImageShapeError(f"resize: the image is empty ({img.shape[0]}x{img.shape[1]} pixels); "
                              "a crop needs at least 1x1")
    return img


def output_hw(size) -> Tuple[int, int]:
    """`size` (an int: a square, or (height, width)) -> (height, width)."""
    if isinstance(size, (tuple, list)):
        oh, ow = int(size[0]), int(size[1])
    else:
        oh = ow = int(size)
    if oh < 1 or ow < 1:
        raise ImageShapeError(f"resize: the output size must be at least 1x1, got {size!r}")
    return oh, ow


@functools.lru_cache(maxsize=4096)
def _band_t(in_size: int, out_size: int) -> np.ndarray:
    """The band weights of (in_size, out_size) as right-hand factors: float64 [blocks, span, BAND]."""
    return np.ascontiguousarray(_band(in_size, out_size).weights.transpose(0, 2, 1))


def _strided(base: np.ndarray, offset: int, shape: Tuple[int, ...], strides: Tuple[int, ...]) -> np.ndarray:
    """A view of the contiguous float64 `base` (offset and strides in elements; cheaper than as_strided)."""
    return np.ndarray(shape, np.float64, base, offset * 8, tuple(s * 8 for s in strides))


def _round_half_down(t: np.ndarray, clip: bool) -> None:
    """In place: Pillow's (sum + HALF) >> PRECISION_BITS on exact sums scaled by 2**-PRECISION_BITS."""
    t += 0.5
    np.floor(t, out=t)
    if clip:
        np.minimum(t, 255.0, out=t)


def resize_uint8(img: np.ndarray, size=spec.FACE_SIZE) -> np.ndarray:
    """uint8 [H,W,C] (or [H,W]) -> uint8 [oh,ow,C] (`size`: an int for a square, or (oh, ow)): the seed's
    resize (module docstring), in numpy.

    The image is split into channel planes (OpenCV's split) inside a zero-padded float64 buffer; the
    horizontal pass is one batched BLAS product per band with the planes' rows on the left (no transpose of
    the input), written straight into the 8-bit intermediate's layout [C, H, ow], whose columns are the
    vertical pass's lines (no transpose between the passes either); the planes merge back at the end."""
    img = _check(img)
    oh, ow = output_hw(size)
    gray = img.ndim == 2
    if gray:
        img = img[:, :, None]
    h, w, c = img.shape
    bx, by = _band(w, ow), _band(h, oh)
    wx = _band_t(w, ow)
    nx, ny = bx.weights.shape[0], by.weights.shape[0]
    ph, pw, owp = by.padded, bx.padded, nx * BAND
    # the planes [C, padded H, padded W]: zero lines around the image, where bands read past its edges
    src = _buffer("planes", (c, ph, pw))
    src[:, :by.lead] = 0.0
    src[:, by.lead + h:] = 0.0
    src[:, :, :bx.lead] = 0.0
    src[:, :, bx.lead + w:] = 0.0
    inner = src[:, by.lead:by.lead + h, bx.lead:bx.lead + w]
    cv2 = _cv2() if c in (3, 4) else None
    if cv2 is not None:  # OpenCV deinterleaves uint8 channels several times faster than a strided numpy copy
        for k, plane in enumerate(cv2.split(np.ascontiguousarray(img))):
            inner[k] = plane
    else:
        np.copyto(inner, img.transpose(2, 0, 1))
    # horizontal pass: every row of every plane (pad rows included: they stay 0) times the band weights
    rows = c * ph
    mid = _buffer("across", (rows, owp))
    np.matmul(_strided(src, bx.base, (nx, rows, bx.span), (bx.step, pw, 1)), wx,
              out=_strided(mid, 0, (nx, rows, BAND), (BAND, owp, 1)))
    _round_half_down(mid, bx.clip)  # the 8-bit intermediate image, [C, padded H, ow (+ unused columns)]
    # vertical pass: per plane, the band weights times its rows
    acc = _buffer("down", (c, ny, BAND, owp))
    np.matmul(by.weights, _strided(mid, by.base * owp, (c, ny, by.span, owp), (ph * owp, by.step * owp, owp, 1)),
              out=acc)
    t = acc.reshape(c, ny * BAND, owp)[:, :oh, :ow]
    _round_half_down(t, by.clip)
    planes = t.astype(np.uint8)
    if gray:
        return planes[0]
    if cv2 is not None:
        return cv2.merge(list(planes))
    return np.ascontiguousarray(planes.transpose(1, 2, 0))


def resize_many(images, size: int = spec.FACE_SIZE) -> np.ndarray:
    """A sequence of uint8 [H_k,W_k,C] images of any sizes -> uint8 [N,size,size,C]."""
    images = list(images)
    if not images:
        raise ImageShapeError("resize_many: no images")
    out = np.empty((len(images), size, size) + np.shape(images[0])[2:], np.uint8)
    for k, img in enumerate(images):
        out[k] = resize_uint8(img, size)
    return out


# ------------------------------------------------------------------------------------------------
# torch: any device, crops of different sizes in one batched resample.
# ------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4096)
def tap_windows(in_size: int, out_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """(start int64 [out], coef int32 [out, k]): output pixel i = (sum_t coef[i, t] * line[start[i] + t] + HALF)
    >> PRECISION_BITS, with the non-zero weights of `fixed_point_weights` (the one definition) from each
    output's first non-zero tap; zeros pad the shorter windows, and start + t may pass the input there."""
    m = fixed_point_weights(in_size, out_size)
    nz = m != 0
    first = nz.argmax(1)
    last = in_size - 1 - nz[:, ::-1].argmax(1)
    k = int((last - first).max()) + 1
    t = first[:, None] + np.arange(k)
    coef = np.where(t <= last[:, None], m[np.arange(out_size)[:, None], np.minimum(t, in_size - 1)], 0)
    return first.astype(np.int64), coef.astype(np.int32)  # < 2**23: the weights sum to 2**22


def _batched_taps(torch, sizes: np.ndarray, out_size: int, device):
    """(start long [n, out], coef int32 [n, out, k]) on `device` for crops of `sizes`: built per distinct size
    on the host, one copy each to the device."""
    uniq, inv = np.unique(sizes, return_inverse=True)
    tabs = [tap_windows(int(s), out_size) for s in uniq]
    k = max(c.shape[1] for _, c in tabs)
    start = np.stack([s for s, _ in tabs])[inv]
    coef = np.zeros((len(uniq), out_size, k), np.int32)
    for j, (_, c) in enumerate(tabs):
        coef[j, :, :c.shape[1]] = c
    return torch.from_numpy(start).to(device), torch.from_numpy(coef[inv]).to(device)


def _round8(torch, acc):
    """int32 sums -> uint8: (acc + HALF) >> PRECISION_BITS, clipped to 255 as Pillow does."""
    return acc.add_(HALF).bitwise_right_shift_(spec.RESIZE_PRECISION_BITS).clamp_(max=255).to(torch.uint8)


# int32 accumulator per group of crops: small groups stay in cache on the CPU (16 1080p frames -> 360x640 on one
# thread: 0.55 s at 16 MB, 0.9 s at 64 MB); on a GPU larger groups mean fewer kernel launches
ACC_BYTES = {"cpu": 16 << 20}
ACC_BYTES_OTHER = 256 << 20


def resize_crops_torch(frames, fidx, tblr: np.ndarray, size=spec.FACE_SIZE):
    """Crop k = frames[fidx[k], top:bottom, left:right] (tblr[k] = top, bottom, left, right), resized
    to `size` (an int: square, or (oh, ow)) exactly as `resize_uint8` does -> uint8 [n,oh,ow,C] on the
    frames' device.

    frames: uint8 [N,H,W,C] tensor on any device; fidx: long tensor [n] (same device); tblr: int
    numpy [n,4] inside the frames. One gather of the crops (column-major), then each pass gathers, per tap
    of the widest window, one line per output line (index_select) and accumulates pixel * fixed-point weight
    in int32 (exact: below 2**31), Pillow's integer arithmetic itself; the accumulators are bounded by
    ACC_BYTES (crops in groups), so 16 1080p frames need ~0.15 GB instead of the dense weight matrices' 2.2 GB."""
    import torch

    tblr = np.asarray(tblr, np.int64).reshape(-1, 4)
    oh, ow = output_hw(size)
    n = tblr.shape[0]
    dev = frames.device
    c = frames.shape[3]
    if n == 0:
        return torch.empty(0, oh, ow, c, dtype=torch.uint8, device=dev)
    hs, ws = tblr[:, 1] - tblr[:, 0], tblr[:, 3] - tblr[:, 2]
    if (hs < 1).any() or (ws < 1).any() or (tblr[:, 0] < 0).any() or (tblr[:, 2] < 0).any() \
            or (tblr[:, 1] > frames.shape[1]).any() or (tblr[:, 3] > frames.shape[2]).any():
        k = int(np.nonzero((hs < 1) | (ws < 1) | (tblr[:, 0] < 0) | (tblr[:, 2] < 0)
                           | (tblr[:, 1] > frames.shape[1]) | (tblr[:, 3] > frames.shape[2]))[0][0])
        raise ImageShapeError(f"resize_crops_torch: crop {k} (top, bottom, left, right) = {tuple(tblr[k])} "
                              f"is empty or outside the {frames.shape[1]}x{frames.shape[2]} frames")
    hm = int(hs.max())
    group = max(1, ACC_BYTES.get(dev.type, ACC_BYTES_OTHER) // (hm * ow * c * 4))
    if n > group:  # bounded memory: the integer accumulators of a few crops at a time
        return torch.cat([resize_crops_torch(frames, fidx[j:j + group], tblr[j:j + group], (oh, ow))
                          for j in range(0, n, group)])
    wm = int(ws.max())
    sx, cx = _batched_taps(torch, ws, ow, dev)  # [n, ow], [n, ow, kx]
    sy, cy = _batched_taps(torch, hs, oh, dev)  # [n, oh], [n, oh, ky]
    if (tblr[:, 0] == 0).all() and (hs == frames.shape[1]).all() and (tblr[:, 2] == 0).all() \
            and (ws == frames.shape[2]).all():
        crops = frames.index_select(0, fidx).transpose(1, 2)  # whole frames: [n, W, H, C]
    else:  # one gather of the crops, padded to the largest (the padding meets zero weights), columns first
        t = torch.from_numpy(tblr).to(dev)
        rows = torch.clamp(t[:, :1] + torch.arange(hm, device=dev), max=frames.shape[1] - 1).view(n, 1, hm)
        cols = torch.clamp(t[:, 2:3] + torch.arange(wm, device=dev), max=frames.shape[2] - 1).view(n, wm, 1)
        crops = frames[fidx.view(n, 1, 1), rows, cols]  # [n, wm, hm, C]
    # horizontal pass first: per tap, one row gather of the column-major crops (each row a whole column)
    lines = crops.reshape(n * wm, hm * c)
    mid = _tap_pass(torch, lines, sx, cx, wm)  # [n * ow, hm * C]: the 8-bit intermediate, column-major
    del crops, lines
    # vertical pass: per tap, one row gather of the row-major intermediate
    lines = mid.view(n, ow, hm, c).transpose(1, 2).reshape(n * hm, ow * c)
    return _tap_pass(torch, lines, sy, cy, hm).view(n, oh, ow, c)


def _tap_pass(torch, lines, start, coef, size: int):
    """One pass over `lines` [n * size, L] (crop k's lines at k * size ...): output line (k, i) = round8 of
    sum_t coef[k, i, t] * lines[k * size + start[k, i] + t] (int32, exact) -> uint8 [n * out, L]."""
    n, out = start.shape
    base = (torch.arange(n, device=lines.device) * size).view(n, 1)
    acc = None
    for k in range(coef.shape[2]):
        idx = (base + torch.clamp(start + k, max=size - 1)).view(-1)  # past a window's end: weight 0
        term = lines.index_select(0, idx).to(torch.int32).mul_(coef[:, :, k].reshape(n * out, 1))
        acc = term if acc is None else acc.add_(term)
    return _round8(torch, acc)


# ------------------------------------------------------------------------------------------------
# Whole frames shrunk by a whole factor (the detector's input: 720p, 1080p, 1440p -> 640x360): the same
# definition, computed as one small integer filter per pass.
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WholeFactor:
    """One pass of the resize where in_size = factor * out_size, in a form with small integers.

    Away from the edges every output pixel i reads the same taps, `factor * i - anchor + k`, with the
    fixed-point weights W_k of `fixed_point_weights`; Pillow's normalised float weights there are exactly
    the rationals kernel_k / divisor (the bilinear tent at integer offsets). With T = sum_k kernel_k * pixel
    (an integer below 2**24) and E = sum_k (divisor * W_k - 2**22 * kernel_k) * pixel, Pillow's output
    (sum W_k pixel + 2**21) >> 22 equals floor((2T + divisor) / (2 divisor)) unless 2T + divisor is a
    multiple of 2 divisor and E < 0 (then one less). `exact_from_t` says E can never decide it (every
    W_k is exact, or the divisor is odd, so 2T + divisor is never such a multiple): then the pass is one
    small integer filter and one rounding. `edges`: outputs whose taps leave the line (Pillow renormalises
    them), computed from the fixed-point weights themselves."""

    factor: int
    kernel: Tuple[int, ...]
    divisor: int
    anchor: int
    edges: Tuple[int, ...]
    exact_from_t: bool


@functools.lru_cache(maxsize=256)
def whole_factor(in_size: int, out_size: int):
    """The `WholeFactor` form of the pass in_size -> out_size, or None where in_size is not a whole multiple
    (>= 2) of out_size, or the form would not be exact (`exact_from_t` false: factors 6, 10, 12, ...)."""
    from fractions import Fraction
    from math import lcm

    if out_size < 1 or in_size < 2 * out_size or in_size % out_size:
        return None
    s = in_size // out_size
    m = fixed_point_weights(in_size, out_size)
    i0 = out_size // 2
    nz = np.nonzero(m[i0])[0]
    first, k = int(nz[0]), m[i0, nz[0]:nz[-1] + 1]
    offset = first - s * i0
    centre = Fraction(2 * i0 + 1, 2) * s
    tent = [max(Fraction(0), 1 - abs(j + Fraction(1, 2) - centre) / s) for j in range(first, first + len(k))]
    total = sum(tent)
    ratios = [t / total for t in tent]
    divisor = lcm(*[r.denominator for r in ratios])
    kernel = [int(r * divisor) for r in ratios]
    err = [divisor * int(w) - ONE * a for w, a in zip(k, kernel)]
    exact = (not any(err) or divisor % 2 == 1) and 2 * 255 * sum(abs(e) for e in err) < ONE \
        and 255 * divisor < (1 << 24)
    if not exact:
        return None
    # interior outputs: the same taps (shifted by the factor) and nothing else; the rest are the edges
    starts = s * np.arange(out_size) + offset
    inside = (starts >= 0) & (starts + len(k) <= in_size)
    cols = np.clip(starts[:, None] + np.arange(len(k)), 0, in_size - 1)
    same = inside & (m[np.arange(out_size)[:, None], cols] == k).all(1) & (m.sum(1) == k.sum())
    return WholeFactor(s, tuple(kernel), divisor, -offset, tuple(int(i) for i in np.nonzero(~same)[0]), True)


def whole_factor_plans(shape, size):
    """(vertical, horizontal) `WholeFactor` plans for a frame of `shape` (H, W, ...) resized to `size`, or
    None unless both sides shrink by an exact whole factor."""
    oh, ow = output_hw(size)
    py, px = whole_factor(int(shape[0]), oh), whole_factor(int(shape[1]), ow)
    return (py, px) if py is not None and px is not None else None


_cv2_ready = []


def _cv2():
    """OpenCV, its own thread pool set to one thread the first time: the engine already runs the detector input
    in parallel decode threads, and OpenCV's pool on top of them lost (2-core A/B, 10-s 720p, OpenVINO int8:
    87.4 frames/s with 1 thread, 83.0 with its default; benchmarks/detector_input_ab.py)."""
    try:
        import cv2
    except ImportError:
        return None
    if not _cv2_ready:
        cv2.setNumThreads(1)
        _cv2_ready.append(True)
    return cv2


def _cv2_pass(cv2, img: np.ndarray, plan: WholeFactor, out_size: int, axis: int) -> np.ndarray:
    """One pass along `axis` (1: horizontal, 0: vertical) of a uint8 [H,W,C] image with OpenCV's filter (exact:
    integer sums below 2**15 or in float32 below 2**24), the nearest-neighbour pick of every factor-th sum and
    a rounding that equals floor(T / divisor + 1/2) (the offset 1/(4 divisor) keeps it off every tie)."""
    d = plan.divisor
    ker = np.asarray(plan.kernel, np.float32)
    depth = cv2.CV_16S if 255 * d < (1 << 15) else cv2.CV_32F
    h, w = img.shape[:2]
    if axis == 1:
        t = cv2.filter2D(img, depth, ker[None, :], anchor=(plan.anchor, 0), borderType=cv2.BORDER_CONSTANT)
        t = cv2.resize(t, (out_size, h), interpolation=cv2.INTER_NEAREST)  # column factor * i
    else:
        t = cv2.filter2D(img, depth, ker[:, None], anchor=(0, plan.anchor), borderType=cv2.BORDER_CONSTANT)
        t = cv2.resize(t, (w, out_size), interpolation=cv2.INTER_NEAREST)  # row factor * i
    out = cv2.convertScaleAbs(t, alpha=1.0 / d, beta=0.25 / d)
    if out.ndim == 2 and img.ndim == 3:
        out = out[:, :, None]
    if plan.edges:
        m = fixed_point_weights(img.shape[axis], out_size)
        for i in plan.edges:
            taps = np.nonzero(m[i])[0]
            src = np.take(img, taps, axis=axis).astype(np.int64)
            wts = m[i, taps].reshape((-1, 1, 1) if axis == 0 else (1, -1, 1))
            val = (((src * wts).sum(axis) + HALF) >> spec.RESIZE_PRECISION_BITS).clip(0, 255).astype(np.uint8)
            if axis == 1:
                out[:, i] = val
            else:
                out[i] = val
    return out


def downscale_whole(img: np.ndarray, size):
    """`resize_uint8(img, size)`, bit for bit, for a frame whose sides both shrink by exact whole factors
    (OpenCV's SIMD filters: ~2.5x faster than Pillow on a 720p frame); None where that form does not apply
    or OpenCV (`opencv-python-headless`, a dependency) is missing: the caller resizes another way."""
    img = _check(img)
    plans = whole_factor_plans(img.shape, size)
    cv2 = _cv2() if plans is not None else None
    if cv2 is None:
        return None
    oh, ow = output_hw(size)
    gray = img.ndim == 2
    x = img[:, :, None] if gray else img
    if x.shape[2] > 4:  # OpenCV images have at most 4 channels
        return None
    across = _cv2_pass(cv2, np.ascontiguousarray(x), plans[1], ow, axis=1)
    out = _cv2_pass(cv2, across, plans[0], oh, axis=0)
    return out[:, :, 0] if gray else out


def downscale_frames_torch(frames, size):
    """The torch form of `downscale_whole` for uint8 [N,H,W,C] frames on any device -> float32 [N,C,oh,ow] with
    `resize_uint8`'s values (the detector's input layout), or None where the whole-factor form does not apply.
    Each pass is one grouped strided convolution with the integer kernel (sums exact in float32, rounded to
    the integer they are), integer rounding, and the few edge outputs from the fixed-point weights."""
    import torch

    n, h, w, c = frames.shape
    plans = whole_factor_plans((h, w), size)
    if plans is None:
        return None
    oh, ow = output_hw(size)
    x = frames.permute(0, 3, 1, 2).float()  # [N,C,H,W]
    x = _torch_whole_pass(torch, x, plans[1], ow, dim=3)
    return _torch_whole_pass(torch, x, plans[0], oh, dim=2)


def _torch_whole_pass(torch, x, plan: WholeFactor, out_size: int, dim: int):
    """One pass along `dim` (3: horizontal, 2: vertical) of float [N,C,H,W] holding 8-bit values."""
    import torch.nn.functional as F

    c = x.shape[1]
    in_size = x.shape[dim]
    klen = len(plan.kernel)
    ker = torch.tensor(plan.kernel, dtype=x.dtype, device=x.device)
    ker = ker.view(1, 1, 1, klen) if dim == 3 else ker.view(1, 1, klen, 1)
    stride, padding = ((1, plan.factor), (0, plan.anchor)) if dim == 3 else ((plan.factor, 1), (plan.anchor, 0))
    t = F.conv2d(x, ker.expand(c, 1, *ker.shape[2:]), stride=stride, padding=padding, groups=c)
    short = out_size - t.shape[dim]  # only edge outputs can be missing (their taps pass the end)
    if short > 0:
        t = F.pad(t, (0, short) if dim == 3 else (0, 0, 0, short))
    t = t.narrow(dim, 0, out_size)
    # floor((2T + d) / 2d) on the integers T (float32 holds them exactly below 2**24)
    out = t.round_().mul_(2).add_(plan.divisor).div_(2 * plan.divisor, rounding_mode="floor")
    if plan.edges:
        m = fixed_point_weights(in_size, out_size)
        for i in plan.edges:
            taps = np.nonzero(m[i])[0]
            src = x.index_select(dim, torch.from_numpy(taps).to(x.device)).to(torch.int32)
            wts = torch.from_numpy(m[i, taps].astype(np.int32)).to(x.device)
            wts = wts.view(1, 1, 1, -1) if dim == 3 else wts.view(1, 1, -1, 1)
            val = ((src * wts).sum(dim, keepdim=True) + HALF) >> spec.RESIZE_PRECISION_BITS
            out.narrow(dim, i, 1).copy_(val.clamp(0, 255))
    return out
