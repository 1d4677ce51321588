"""Issue 23 fallback analysis: is the single decode thread's chain (decode + Pillow detector input) what bounds
the fast precisions? A/B, each configuration in its own process, rounds interleaved: today's engine against the
same engine with the detector input of each chunk made by 2 threads (halves of the chunk, the same Pillow
function, so the same bytes: `faces.detector_input`); end to end `--sample all` frames/s of a 10-s 720p clip and
the process's CPU seconds (cores busy), plus u (onnxruntime fp32 classifier faces/s at batch 8) each round.

    PYTHONPATH=. python benchmarks/detector_input_threads.py --models DIR --video clip720.mp4 --rounds 3 --out OUT.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one(models: str, video: str, precision: str, threads: int) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from dfserve.models import load_runtime, resolve_models
    from dfserve.pipeline import faces
    from dfserve.pipeline.engine import Scorer
    from dfserve.pipeline.options import ScoreOptions
    from dfserve.pipeline.sampling import parse_policy

    pool = ThreadPoolExecutor(threads) if threads > 1 else None

    class Parallel(Scorer):
        def detector_prep(self, frames):
            if pool is None or len(frames) < 2:
                return super().detector_prep(frames)
            k = len(frames) // 2
            parts = list(pool.map(lambda fs: faces.detector_input(fs, self.opt.detect_max_side, dtype=np.uint8),
                                  [frames[:k], frames[k:]]))
            return np.concatenate([p[0] for p in parts]), parts[0][1]

    rt = load_runtime("openvino", resolve_models(models=models), precision=precision)
    list(Parallel(rt, ScoreOptions(sample=parse_policy("first:16"))).score([video]))  # warm-up
    c, t = _cpu(), time.perf_counter()
    r = list(Parallel(rt, ScoreOptions(sample=parse_policy("all"))).score([video]))[0]
    dt, cpu = time.perf_counter() - t, _cpu() - c
    return {"frames_per_s": r["frames_scored"] / dt, "cores_busy": cpu / dt, "p_fake": r["p_fake"]}


def unit_u(models: str) -> dict:
    from dfserve.models import load_runtime, resolve_models
    from dfserve.samples import astronaut_face_crops, normalize_faces

    rt = load_runtime("onnxruntime", resolve_models(models=models), precision="fp32")
    x = normalize_faces(astronaut_face_crops(8, seed=5))
    rt.classify(x)
    ts = []
    for _ in range(7):
        t = time.perf_counter()
        rt.classify(x)
        ts.append(time.perf_counter() - t)
    return {"faces_per_s": 8 / statistics.median(ts)}


CONFIGS = [("openvino fp32, detector input 1 thread (today)", "fp32", 1),
           ("openvino fp32, detector input 2 threads", "fp32", 2),
           ("openvino int8, detector input 1 thread (today)", "int8", 1),
           ("openvino int8, detector input 2 threads", "int8", 2)]


def _sub(a, *args) -> dict:
    cmd = [sys.executable, __file__, "--models", a.models, "--video", a.video, "--one", *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True)
    ap.add_argument("--video", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out")
    ap.add_argument("--one", nargs=2, metavar=("PRECISION|u", "THREADS"))
    a = ap.parse_args()
    if a.one:
        p, n = a.one
        print(json.dumps(unit_u(a.models) if p == "u" else one(a.models, a.video, p, int(n))))
        return 0
    runs = {c[0]: [] for c in CONFIGS}
    us, loads = [], [round(os.getloadavg()[0], 2)]
    for r in range(a.rounds):
        us.append(_sub(a, "u", 0)["faces_per_s"])
        for name, p, n in (CONFIGS if r % 2 == 0 else CONFIGS[::-1]):
            x = _sub(a, p, n)
            runs[name].append(x)
            print(f"round {r + 1}: {name}: {x['frames_per_s']:.1f} frames/s, cores busy {x['cores_busy']:.2f}",
                  file=sys.stderr, flush=True)
        loads.append(round(os.getloadavg()[0], 2))
    u = statistics.median(us)
    res = {"command": "python benchmarks/detector_input_threads.py " + " ".join(sys.argv[1:]),
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "video": os.path.basename(a.video), "rounds": a.rounds,
           "u_faces_per_s": round(u, 1), "u_all": [round(v, 1) for v in us], "load_average": loads, "configs": {}}
    for name, xs in runs.items():
        fps = [x["frames_per_s"] for x in xs]
        res["configs"][name] = {"frames_per_s_median": round(statistics.median(fps), 2),
                                "frames_per_s_all": [round(v, 2) for v in fps], "u": round(statistics.median(fps) / u, 3),
                                "cores_busy_median": round(statistics.median(x["cores_busy"] for x in xs), 2),
                                "p_fake": sorted({x["p_fake"] for x in xs})}
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
