"""GPU check of the NV12 / P016 -> BGR conversion (dfserve.pipeline.gpu_colours.nv12_to_bgr) against the CPU path.

Decodes CLIP with PyAV on the CPU, builds NVDEC's layout from the decoded planes (NV12: luma + interleaved U, V;
P016 for 10/12-bit: the samples at the top of 16 bits), converts them on DEVICE with torch, and compares with the
CPU path's frames (frame_colours.frame_to_bgr). Prints JSON {max_abs_diff, frac_differing, frames, ms_per_frame}.
With --nvdec it also decodes with PyNvVideoCodec (native surfaces) and compares those frames too.

    python benchmarks/gpu/colour_check.py CLIP [--device cuda] [--nvdec]
"""
import argparse
import json
import time

import numpy as np


def main():
    import av
    import torch

    from dfserve.pipeline.frame_colours import _plane, frame_to_bgr, high_depth_420
    from dfserve.pipeline.gpu_colours import nv12_to_bgr

    ap = argparse.ArgumentParser()
    ap.add_argument("clip")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--nvdec", action="store_true", help="also compare PyNvVideoCodec's decode + conversion")
    a = ap.parse_args()
    dev = torch.device(a.device)
    worst, differing, pixels, n, secs = 0, 0, 0, 0, 0.0
    with av.open(a.clip) as c:
        for f in c.decode(video=0):
            bits = high_depth_420(f) or 8
            h, w = f.height, f.width
            dt = "<u2" if bits > 8 else "u1"
            shift = 16 - bits if bits > 8 else 0
            y = torch.from_numpy(_plane(f, 0, w, h, dt).astype(np.int32) << shift).to(dev)
            uv = np.stack([_plane(f, 1, (w + 1) // 2, (h + 1) // 2, dt), _plane(f, 2, (w + 1) // 2, (h + 1) // 2, dt)], -1)
            uv = torch.from_numpy(uv.astype(np.int32) << shift).to(dev)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            out = nv12_to_bgr(y, uv, bits=bits, full_range=f.format.name.startswith("yuvj"), msb_aligned=bits > 8)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            secs += time.perf_counter() - t
            d = np.abs(out[0].cpu().numpy().astype(int) - frame_to_bgr(f).astype(int)).max(-1)
            worst, differing, pixels, n = max(worst, int(d.max())), differing + int((d > 0).sum()), pixels + d.size, n + 1
    res = {"clip": a.clip, "device": str(dev), "frames": n, "max_abs_diff": worst,
           "frac_differing": differing / max(pixels, 1), "ms_per_frame": round(1000 * secs / max(n, 1), 3)}
    if a.nvdec:
        from dfserve.pipeline.decode import DecodeStats, iter_frames, probe
        from dfserve.pipeline.gpu_scorer import iter_frames_nvdec
        from dfserve.pipeline.sampling import parse_policy

        info = probe(a.clip)
        cpu = [f for _, fr in iter_frames(a.clip, parse_policy("all"), info, DecodeStats()) for f in fr]
        gpu = [f.cpu().numpy() for _, fr in iter_frames_nvdec(a.clip, parse_policy("all"), probe(a.clip), DecodeStats())
               for f in fr]
        d = np.abs(np.stack(cpu).astype(int) - np.stack(gpu).astype(int)).max(-1)
        res["nvdec"] = {"frames": len(gpu), "max_abs_diff": int(d.max()), "frac_differing": float(np.mean(d > 0))}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
