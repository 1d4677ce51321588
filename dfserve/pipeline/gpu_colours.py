"""NVDEC's NV12 / P016 planes to BGR with torch, by the same colour rule as the CPU path (frame_colours.py).

NVDEC hands out NV12 (8-bit: a luma plane, then one plane of interleaved U, V at half size each way) and P016
(the same layout, 16-bit samples with the video's 10 or 12 bits at the top). `nv12_to_bgr` turns a batch of
them into the BGR uint8 `frame_colours.frame_to_bgr` gives for the same decoded samples:
- 8-bit: swscale's unscaled converter, bit for bit (the same per-sample terms, `frame_colours.seed_8bit_terms`,
  looked up with one gather each; each 2x2 block shares its chroma sample);
- 10/12-bit: the same integer model of swscale's scaled path (`frame_colours.seed_high_depth_bgr`: the vertical
  chroma filter's taps by `chroma_taps`, `mmx_bgr`'s terms, the C output's tables for the last two rows), the same
  operations in the same order.
Everything stays on the tensors' device; nothing is copied to the host. `planes_to_bgr` does the same for the
planes a CPU decoder kept (frame_planes.Planes): one host-to-device copy of 1.5 bytes a pixel, then this.
"""
from __future__ import annotations

from .frame_colours import (C_PATH_ROWS, C_TABLE_HEADROOM, MMX_ROUNDER, c_output_tables, chroma_taps, mmx_bgr,
                            seed_8bit_terms, to_15_bits)

_TERMS = {}  # (full_range, device) -> dict of int32 tensors


def _terms(full_range: bool, device):
    import torch

    key = (bool(full_range), str(device))
    if key not in _TERMS:
        _TERMS[key] = {k: torch.as_tensor(v, device=device) for k, v in seed_8bit_terms(full_range).items()}
    return _TERMS[key]


def split_nv12(surface, height: int):
    """A decoder surface [B, H*3/2, W] (or [H*3/2, W]) as (luma [B,H,W], chroma [B,ceil(H/2),ceil(W/2),2])."""
    s = surface if surface.dim() == 3 else surface.unsqueeze(0)
    b, _, w = s.shape
    y = s[:, :height]
    ch = (height + 1) // 2
    uv = s[:, height:height + ch].reshape(b, ch, w // 2, 2)
    return y, uv


def nv12_to_bgr(luma, chroma, bits: int = 8, full_range: bool = False, msb_aligned: bool = False):
    """BGR uint8 [B,H,W,3] from luma [B,H,W] and interleaved chroma [B,ceil(H/2),ceil(W/2),2] (NV12 / P016).

    bits: the video's bit depth (8, 10, 12). msb_aligned: the samples sit at the top of 16 bits (P016, P010) and
    are shifted down by 16 - bits. full_range: the 8-bit stream is a yuvj (full range) one, as the CPU path reads
    its pixel format; high bit depths are always limited range there (as OpenCV's swscale takes them).
    """
    import torch

    y = luma if luma.dim() == 3 else luma.unsqueeze(0)
    c = chroma if chroma.dim() == 4 else chroma.unsqueeze(0)
    b, h, w = y.shape
    if bits == 8 and not msb_aligned:
        t = _terms(full_range, y.device)
        yl, cl = y.long(), c.long()
        u = cl[..., 0].repeat_interleave(2, 1).repeat_interleave(2, 2)[:, :h, :w]
        v = cl[..., 1].repeat_interleave(2, 1).repeat_interleave(2, 2)[:, :h, :w]
        yt = t["y"][yl]
        bgr = torch.stack([yt + t["ub"][u], yt + t["ug"][u] + t["vg"][v], yt + t["vr"][v]], dim=-1)
        return bgr.clamp_(0, 255).to(torch.uint8)
    yi, ci = y.to(torch.int64) & 0xFFFF, c.to(torch.int64) & 0xFFFF  # uint16 samples held in int16 come back negative
    if msb_aligned:
        yi, ci = yi >> (16 - bits), ci >> (16 - bits)
    return _high_depth_bgr(yi, ci[..., 0], ci[..., 1], bits)


def _high_depth_bgr(yi, ui, vi, bits: int):
    """frame_colours.seed_high_depth_bgr, step for step, on int64 [B,H,W] / [B,ch,cw] tensors."""
    import torch

    b, h, w = yi.shape
    idx, wt, t = _high_depth_constants(ui.shape[1], h, yi.device)
    k = min(C_PATH_ROWS, h)
    y15, u15, v15 = (to_15_bits(a, bits) for a in (yi, ui, vi))

    def taps(c15, rows):
        return [c15.index_select(1, idx[rows, j]) * wt[rows, j, None] for j in range(4)]

    def mmx_chroma(c15):
        s = sum(p >> 16 for p in taps(c15, slice(0, h - k)))
        return s.repeat_interleave(2, 2)[:, :, :w] + MMX_ROUNDER

    def c_chroma(c15):
        s = (1 << 18) + sum(taps(c15, slice(h - k, h)))
        return (s >> 19).repeat_interleave(2, 2)[:, :, :w]

    out = torch.empty((b, h, w, 3), dtype=torch.uint8, device=yi.device)
    y11 = (y15[:, :h - k] >> 4) + MMX_ROUNDER
    out[:, :h - k] = torch.stack(mmx_bgr(y11, mmx_chroma(u15), mmx_chroma(v15)), dim=-1).clamp_(0, 255)
    y8 = (y15[:, h - k:] * 4096 + (1 << 18)) >> 19
    u8, v8 = c_chroma(u15) + C_TABLE_HEADROOM, c_chroma(v15) + C_TABLE_HEADROOM
    out[:, h - k:] = torch.stack([t["y"][t["bU"][u8] + y8], t["y"][t["gU"][u8] + t["gV"][v8] + y8],
                                  t["y"][t["rV"][v8] + y8]], dim=-1)
    return out


_HIGH_DEPTH = {}  # (chroma rows, rows, device) -> (tap index, tap weight, C output tables) as tensors


def _high_depth_constants(chroma_rows: int, rows: int, device):
    import torch

    key = (chroma_rows, rows, str(device))
    if key not in _HIGH_DEPTH:
        if len(_HIGH_DEPTH) >= 32:  # a server seeing many frame sizes: keep the cache bounded
            _HIGH_DEPTH.clear()
        idx, wt = (torch.tensor(a, device=device) for a in chroma_taps(chroma_rows, rows))
        tables = {k: torch.as_tensor(v, device=device) for k, v in c_output_tables().items()}
        _HIGH_DEPTH[key] = (idx, wt, tables)
    return _HIGH_DEPTH[key]


def upright_batch(frames, rotation: int):
    """`decode.upright` on a batch tensor [B,H,W,C]: the display rotation, as the CPU path applies it."""
    import torch

    k = int(round(rotation / 90.0)) % 4
    return torch.rot90(frames, k, dims=(1, 2)).contiguous() if k else frames


def planes_to_bgr(run, device):
    """Upright BGR uint8 [B,H,W,3] on `device` from frame_planes.Planes of one form: their buffers copied in one
    transfer, converted by `nv12_to_bgr` (the CPU path's BGR, byte for byte) and turned upright."""
    import numpy as np
    import torch

    p = run[0]
    h, w, ch, cw = p.height, p.width, (p.height + 1) // 2, (p.width + 1) // 2
    host = np.stack([f.data for f in run])
    if host.dtype != np.uint8:
        host = host.view(np.int16)  # 10/12-bit samples fit int16; torch's uint16 has few operations
    t = torch.from_numpy(host).to(device, non_blocking=True)
    b, n_y, n_c = t.shape[0], h * w, ch * cw
    y = t[:, :n_y].view(b, h, w)
    uv = torch.stack([t[:, n_y:n_y + n_c].view(b, ch, cw), t[:, n_y + n_c:].view(b, ch, cw)], dim=-1)
    return upright_batch(nv12_to_bgr(y, uv, bits=p.bits, full_range=p.full_range), p.rotation)
