"""The `hotpath` stage of benchmarks/gpu/bench_gpu.py (issue 21's design measured, issue 22 item 3).

  - `--streams` 1/2/4: `TorchScorer` (NVDEC where present, fp16 + CUDA graphs) on all clips at once
    (frames/s) and one clip alone (p50 ms);
  - `--split` 1/2/4/8: one clip alone through the PyAV decoders (split applies to PyAV; NVDEC is one session
    per video), p50 ms, with the decode-only time of the same split for the bound;
  - `torch.compile` (inductor) against eager + CUDA graphs: classifier faces/s at batch 64/256, compile s;
  - exactness: fp32 on the GPU (TF32 off) against onnxruntime fp32 on the same pre-cropped faces
    (`fp32_max_abs_diff_precropped`, p_fake), and NV12 -> BGR on the device against the CPU path's frames
    (`colour`: max grey-level difference; benchmarks/gpu/colour_check.py).
With --smoke it runs on the CPU with tiny clips (a check of this code without a GPU).
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _p50(fn, reps: int) -> float:
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(t), 1)


def _scorer(rt, dev: str, streams: int = 0, split: str = "1", nvdec=None, workers: int = 4):
    from dfserve.pipeline.gpu_scorer import TorchScorer
    from dfserve.pipeline.options import ScoreOptions
    from dfserve.pipeline.sampling import parse_policy

    opts = ScoreOptions(sample=parse_policy("all"), decode_workers=workers, batch=64 if dev != "cpu" else 16,
                        streams=streams, split=split)
    return TorchScorer(rt, opts, use_nvdec=nvdec)


def stage_hotpath(args, clips: dict, models: Path, seed_model) -> dict:
    import numpy as np
    import torch

    from dfserve.pipeline.runtimes.torch_rt import TorchRuntime

    dev = "cpu" if args.smoke else "cuda"
    paths = clips["h264"] + clips["hevc"]
    reps = 1 if args.smoke else 5
    out: dict = {"device": dev, "clips": [Path(p).name for p in paths]}
    rt = TorchRuntime(seed_model, device=dev, fp16=dev != "cpu",
                      cuda_graph_batches=(8, 16, 32, 64) if dev != "cpu" else ())

    rows = []
    for n in ((1, 2) if args.smoke else (1, 2, 4)):
        sc = _scorer(rt, dev, streams=n)
        list(sc.score(paths[:1]))  # warm-up
        t0 = time.perf_counter()
        res = list(sc.score(paths))
        dt = time.perf_counter() - t0
        frames = sum(r["frames_decoded"] for r in res)
        rows.append({"streams": n, "decoder": sc.decoder, "frames_per_s": round(frames / dt, 1),
                     "clip_p50_ms": _p50(lambda: list(sc.score(paths[:1])), reps),
                     "errors": [r["error"] for r in res if r["error"]]})
        print(f"  streams {n}: {rows[-1]}", flush=True)
    out["streams"] = rows
    best = max(rows, key=lambda r: r["frames_per_s"])
    out["e2e_frames_per_s"] = best["frames_per_s"]
    out["clip_10s_1080p_p50_ms"] = min(r["clip_p50_ms"] for r in rows)

    rows = []
    for k in ((1, 2) if args.smoke else (1, 2, 4, 8)):
        sc = _scorer(rt, dev, streams=0, split=str(k), nvdec=False, workers=1)
        list(sc.score(paths[:1]))
        rows.append({"split": k, "decoder": sc.decoder, "clip_p50_ms": _p50(lambda: list(sc.score(paths[:1])), reps)})
        print(f"  split {k}: {rows[-1]}", flush=True)
    out["split"] = rows
    out["clip_10s_1080p_p50_ms"] = min([out["clip_10s_1080p_p50_ms"]] + [r["clip_p50_ms"] for r in rows])

    # torch.compile against eager + CUDA graphs (classifier)
    if dev != "cpu":
        comp: dict = {}
        for name, kw in (("eager_graphs", {}), ("compiled_graphs", {"compile": True})):
            t0 = time.perf_counter()
            r2 = TorchRuntime(seed_model, device=dev, fp16=True, cuda_graph_batches=(64, 256), **kw)
            comp[name] = {"setup_s": round(time.perf_counter() - t0, 1),
                          "compile_s": round(r2.compile_seconds, 1)}
            for b in (64, 256):
                x = torch.randn(b, 3, 112, 112, device=dev)
                r2.classify_tensor(x)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(20):
                    r2.classify_tensor(x)
                torch.cuda.synchronize()
                comp[name][str(b)] = round(20 * b / (time.perf_counter() - t0), 1)
            del r2
            torch.cuda.empty_cache()
        out["compile"] = comp
        print(f"  compile: {comp}", flush=True)
        out["classifier_fp16_faces_per_s"] = max(v for d in comp.values() for k, v in d.items() if k.isdigit())

    # exactness: fp32 on the device vs onnxruntime fp32 on the same pre-cropped faces
    from dfserve.contract import normalize_faces
    from dfserve.pipeline.runtimes.ort import OnnxRuntime
    from dfserve.samples import astronaut_face_crops

    faces = normalize_faces(astronaut_face_crops(32, seed=1))
    ort = OnnxRuntime(models).classify(faces)
    r32 = TorchRuntime(seed_model, device=dev, fp16=False, cuda_graph_batches=(32,) if dev != "cpu" else ())
    got = r32.classify_tensor(torch.from_numpy(faces).to(dev)).cpu().numpy()
    sm = lambda z: np.exp(z[:, 0]) / np.exp(z).sum(1)  # noqa: E731 - p_fake (class 0 = FAKE)
    out["fp32_max_abs_diff_precropped"] = float(np.abs(sm(got.astype(np.float64)) - sm(ort.astype(np.float64))).max())
    out["fp32_max_abs_logit_diff_precropped"] = float(np.abs(got - ort).max())

    # colours: NV12 -> BGR on the device against the CPU path's frames
    if dev != "cpu":
        r = subprocess.run([sys.executable, "benchmarks/gpu/colour_check.py", paths[0], "--device", dev, "--nvdec"],
                           capture_output=True, text=True, timeout=120)
        try:
            out["colour"] = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            out["colour"] = {"error": (r.stdout + r.stderr)[-1500:]}
    return out
