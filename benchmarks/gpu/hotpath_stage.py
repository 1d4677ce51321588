"""The `hotpath` stage of benchmarks/gpu/bench_gpu.py (issue 21's design measured, issue 22 item 3).

  - `--streams` 1/2/4: `TorchScorer` (NVDEC where present, fp16 + CUDA graphs) on all clips at once
    (frames/s) and one clip alone (p50 ms);
  - `--split` 1/2/4/8: one clip alone, NVDEC (one session per key-frame range) and PyAV, p50 ms, the
    ranges really used, the decode-only p50 of the same split (the bound), p_fake equal to split 1;
  - the defaults (`--split auto`, `--streams auto`): all clips at once and one clip alone;
  - CPU decoders joining NVDEC (`--cpu-decoders 0 / auto`): every clip three times, four NVDEC sessions as the
    main decoders, frames/s and the videos each kind took; and PyAV frames uploaded as BGR vs as their planes
    (converted on the GPU: frame_planes.py), frames/s without NVDEC;
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


COMPILE_LIMIT_S = 150


class _time_limit:
    """`with`: TimeoutError in this (main) thread after `seconds` (SIGALRM)."""

    def __init__(self, seconds: int):
        self.seconds = seconds

    def __enter__(self):
        import signal

        def alarm(signum, frame):
            raise TimeoutError(f"more than {self.seconds} s")
        self._old = signal.signal(signal.SIGALRM, alarm)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        import signal

        signal.alarm(0)
        signal.signal(signal.SIGALRM, self._old)
        return False


def _p50(fn, reps: int) -> float:
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(t), 1)


def _scorer(rt, dev: str, streams: int = 0, split: str = "1", nvdec=None, workers: int = 4, cpu_decoders: str = "0"):
    from dfserve.pipeline.gpu_scorer import TorchScorer
    from dfserve.pipeline.options import ScoreOptions
    from dfserve.pipeline.sampling import parse_policy

    opts = ScoreOptions(sample=parse_policy("all"), decode_workers=workers, batch=64 if dev != "cpu" else 16,
                        streams=streams, split=split, cpu_decoders=cpu_decoders)
    return TorchScorer(rt, opts, use_nvdec=nvdec)


def _rate(sc, paths) -> dict:
    """All `paths` at once through `sc` (after one clip's warm-up): frames/s and the videos each decoder took."""
    list(sc.score(paths[:1]))
    sc.videos_by_decoder.clear()
    t0 = time.perf_counter()
    res = list(sc.score(paths))
    dt = time.perf_counter() - t0
    return {"frames_per_s": round(sum(r["frames_decoded"] for r in res) / dt, 1),
            "videos_by_decoder": dict(sc.videos_by_decoder), "errors": [r["error"] for r in res if r["error"]]}


def _decode_only(sc, path: str) -> int:
    """Decode one clip the way the scorer does (its decoder and split), every frame kept; frames decoded."""
    from dfserve.pipeline.decode import DecodeStats, probe
    from dfserve.pipeline.sampling import parse_policy

    info, stats = probe(path), DecodeStats()
    n = 0
    for idx, _ in sc.iter_frames(path, parse_policy("all"), info, stats, chunk=16):
        n += len(idx)
    return n


def _ranges_used(sc, path: str) -> int:
    from dfserve.pipeline.decode import DecodeStats, probe
    from dfserve.pipeline.sampling import parse_policy

    stats = DecodeStats()
    for _ in sc.iter_frames(path, parse_policy("all"), probe(path), stats, chunk=16):
        pass
    return stats.ranges


def stage_hotpath(args, clips: dict, models: Path, seed_model) -> dict:
    import numpy as np
    import torch

    from dfserve.pipeline.runtimes.torch_rt import TorchRuntime

    started = time.perf_counter()
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
    from dfserve.pipeline.gpu_scorer import nvdec_available

    decoders = ([True] if nvdec_available() else []) + [False]
    ref = {}
    for nv in decoders:
        for k in ((1, 2) if args.smoke else (1, 2, 4, 8)):
            sc = _scorer(rt, dev, streams=0, split=str(k), nvdec=nv, workers=1)
            first = list(sc.score(paths[:1]))
            row = {"split": k, "decoder": sc.decoder, "ranges": _ranges_used(sc, paths[0]),
                   "clip_p50_ms": _p50(lambda: list(sc.score(paths[:1])), reps),
                   "decode_only_p50_ms": _p50(lambda: _decode_only(sc, paths[0]), reps)}
            p = first[0]["p_fake"]
            ref.setdefault(sc.decoder, p)
            row["p_fake_equal_to_split_1"] = p == ref[sc.decoder]
            rows.append(row)
            print(f"  split {k}: {rows[-1]}", flush=True)
    out["split"] = rows
    out["clip_10s_1080p_p50_ms"] = min([out["clip_10s_1080p_p50_ms"]] + [r["clip_p50_ms"] for r in rows])
    # the default (--split auto, --streams auto) as a user runs it: one clip alone and all clips at once
    sc = _scorer(rt, dev, streams=0, split="auto")
    list(sc.score(paths[:1]))
    t0 = time.perf_counter()
    res = list(sc.score(paths))
    dt = time.perf_counter() - t0
    out["default"] = {"decoder": sc.decoder, "split": "auto", "ranges": _ranges_used(sc, paths[0]),
                      "frames_per_s": round(sum(r["frames_decoded"] for r in res) / dt, 1),
                      "clip_p50_ms": _p50(lambda: list(sc.score(paths[:1])), reps)}
    print(f"  default: {out['default']}", flush=True)
    out["e2e_frames_per_s"] = max(out["e2e_frames_per_s"], out["default"]["frames_per_s"])
    out["clip_10s_1080p_p50_ms"] = min(out["clip_10s_1080p_p50_ms"], out["default"]["clip_p50_ms"])

    # CPU decoders joining the main decoders: every clip three times (more videos than the main decoders take)
    rows = []
    for n in (("0", "2") if args.smoke else ("0", "auto")):
        sc = _scorer(rt, dev, streams=0, split="1", workers=2 if args.smoke else 4, cpu_decoders=n)
        rows.append({"cpu_decoders": n, "main": sc.decoder, "joined": sc.cpu_decoders(sc.decoder == "nvdec"),
                     **_rate(sc, paths * 3)})
        print(f"  cpu decoders {n}: {rows[-1]}", flush=True)
    out["cpu_decoders"] = rows
    out["e2e_frames_per_s"] = max([out["e2e_frames_per_s"]] + [r["frames_per_s"] for r in rows])
    # PyAV's frames to the device as BGR or as planes (no NVDEC; the planes are the default on a GPU)
    rows = []
    for planes in (False, True):
        sc = _scorer(rt, dev, streams=0, split="auto", nvdec=False)
        sc.planes = planes
        rows.append({"planes": planes, **_rate(sc, paths)})
        print(f"  pyav planes {planes}: {rows[-1]}", flush=True)
    out["pyav_upload"] = rows

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
    # torch.compile against eager + CUDA graphs (classifier)
    if dev != "cpu":
        comp: dict = {}
        # compiled: batch 256 alone (each captured batch size is one more inductor compile, ~a minute cold)
        for name, kw, batches in (("eager_graphs", {}, (64, 256)), ("compiled_graphs", {"compile": True}, (256,))):
            if time.perf_counter() - started > 150:
                comp[name] = {"skipped": "the stage's time ran short"}
                continue
            t0 = time.perf_counter()
            try:
                with _time_limit(COMPILE_LIMIT_S):  # the stage's results must not die with a slow compile
                    r2 = TorchRuntime(seed_model, device=dev, fp16=True, cuda_graph_batches=batches, **kw)
            except TimeoutError:
                comp[name] = {"error": f"setup (compile) took more than {COMPILE_LIMIT_S} s: stopped"}
                continue
            comp[name] = {"setup_s": round(time.perf_counter() - t0, 1),
                          "compile_s": round(r2.compile_seconds, 1)}
            for b in batches:
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

    return out
