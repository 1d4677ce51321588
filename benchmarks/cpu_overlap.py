"""Issue 23 item 2: the two networks overlapped without oversubscription — interleaved A/B of thread splits.

Every configuration runs in its own process (`--one`), rounds interleaved so each sees the same load (the
machine is shared): end to end `--sample all` frames/s of a 10-s 720p clip, OpenVINO fp32 and int8 with
`$DFSERVE_MODEL_THREADS` = the split chosen by `model_threads` vs "all" (both networks on every core, the
previous behaviour), and in the same rounds the unit u = onnxruntime fp32 classifier faces/s at batch 8.

    PYTHONPATH=. python benchmarks/cpu_overlap.py --models DIR --video clip720.mp4 --rounds 5 --out OUT.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from ab_common import unit_u


def one(models: str, video: str, runtime: str, precision: str) -> dict:
    """This process: score `video` once warm, return frames/s and the rows."""
    from dfserve.models import load_runtime, resolve_models
    from dfserve.pipeline.engine import Scorer
    from dfserve.pipeline.options import ScoreOptions
    from dfserve.pipeline.sampling import parse_policy

    if os.environ.get("BENCH_FREE_PREP"):
        _free_detector_input()
    rt = load_runtime(runtime, resolve_models(models=models), precision=precision)
    opts = ScoreOptions(sample=parse_policy("all"))
    list(Scorer(rt, ScoreOptions(sample=parse_policy("first:16"))).score([video]))  # warm-up (kernels, caches)
    t = time.perf_counter()
    rows = list(Scorer(rt, opts).score([video]))
    dt = time.perf_counter() - t
    r = rows[0]
    return {"frames": r["frames_scored"], "seconds": dt, "frames_per_s": r["frames_scored"] / dt,
            "p_fake": r["p_fake"], "threads": [getattr(rt, "detector_threads", None),
                                               getattr(rt, "classifier_threads", None)]}


def _free_detector_input() -> None:
    """Upper bound of what a cheaper detector input can give end to end: the decode threads make the 640x360
    input of a 1280x720 frame by taking every other pixel (~0.1 ms, boxes NOT checked: speed bound only;
    swscale from the decoded YUV frame costs ~0.9 ms: benchmarks/swscale_detector_input.py)."""
    import numpy as np

    from dfserve.pipeline import engine, faces

    def cheap(frames, max_side=640, dtype=np.float32):
        h, w, scale = faces.detector_size(frames[0].shape[0], frames[0].shape[1], max_side)
        f0 = frames[0]
        if (f0.shape[0], f0.shape[1]) != (2 * h, 2 * w):
            return faces.detector_input(frames, max_side, dtype)
        x = np.ascontiguousarray(np.stack([f[::2, ::2] for f in frames]).transpose(0, 3, 1, 2))
        return (x if x.dtype == dtype else x.astype(dtype)), scale

    engine.detector_input = cheap


CONFIGS = [  # (name, runtime, precision, $DFSERVE_MODEL_THREADS or None for the default split)
    ("openvino fp32 split", "openvino", "fp32", None),
    ("openvino fp32 all", "openvino", "fp32", "all"),
    ("openvino int8 split", "openvino", "int8", None),
    ("openvino int8 all", "openvino", "int8", "all"),
    ("openvino fp32 1,2", "openvino", "fp32", "1,2"),  # 2-core alternatives to the chosen split
    ("openvino fp32 2,1", "openvino", "fp32", "2,1"),
    # the detector input at no cost (speed bound of item 1, boxes not checked)
    ("openvino fp32 split free-prep", "openvino", "fp32", None),
    ("openvino int8 split free-prep", "openvino", "int8", None),
    ("openvino fp32 all free-prep", "openvino", "fp32", "all"),
    ("openvino int8 all free-prep", "openvino", "int8", "all"),
    ("openvino int8 1,2", "openvino", "int8", "1,2"),
    ("openvino int8 2,1", "openvino", "int8", "2,1"),
    ("openvino int8 1,1", "openvino", "int8", "1,1"),
    ("openvino fp32 1,1", "openvino", "fp32", "1,1"),
    ("openvino bf16 all", "openvino", "bf16", "all"),
    ("openvino bf16 2,1", "openvino", "bf16", "2,1"),
    ("openvino bf16 1,2", "openvino", "bf16", "1,2"),
    ("openvino int8 all", "openvino", "int8", "all"),
]


def _sub(args, kind, rt="", p="", env_threads=None, name="") -> dict:
    env = dict(os.environ)
    env.pop("DFSERVE_MODEL_THREADS", None)
    if env_threads:
        env["DFSERVE_MODEL_THREADS"] = env_threads
    env.pop("BENCH_FREE_PREP", None)
    if name.endswith("free-prep"):
        env["BENCH_FREE_PREP"] = "1"
    cmd = [sys.executable, __file__, "--one", kind, rt, p, "--models", args.models, "--video", args.video]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True)
    ap.add_argument("--video", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out")
    ap.add_argument("--configs", help="semicolon-separated names to run (default all; names hold commas)")
    ap.add_argument("--one", nargs=3, metavar=("KIND", "RUNTIME", "PRECISION"))
    a = ap.parse_args()
    if a.one:
        kind, rt, p = a.one
        print(json.dumps(unit_u(a.models) if kind == "u" else one(a.models, a.video, rt, p)))
        return 0
    configs = [c for c in CONFIGS if not a.configs or c[0] in a.configs.split(";")]
    runs = {c[0]: [] for c in configs}
    us, loads = [], []
    for r in range(a.rounds):
        us.append(_sub(a, "u")["faces_per_s"])
        for name, rt, p, env in (configs if r % 2 == 0 else configs[::-1]):
            x = _sub(a, "e2e", rt, p, env, name)
            runs[name].append(x)
            print(f"round {r + 1}: {name}: {x['frames_per_s']:.1f} frames/s threads {x['threads']} "
                  f"p_fake {x['p_fake']}", file=sys.stderr, flush=True)
        loads.append(round(os.getloadavg()[0], 2))
        print(f"round {r + 1}: u {us[-1]:.1f} faces/s, load {loads[-1]}", file=sys.stderr, flush=True)
    u = statistics.median(us)
    res = {"video": os.path.basename(a.video), "rounds": a.rounds, "u_faces_per_s_all": [round(v, 1) for v in us],
           "u_faces_per_s": round(u, 1), "load_average_after_each_round": loads, "configs": {}}
    for name, xs in runs.items():
        fps = [x["frames_per_s"] for x in xs]
        res["configs"][name] = {"threads_det_cls": xs[0]["threads"], "frames_per_s_median": round(statistics.median(fps), 2),
                                "frames_per_s_all": [round(v, 2) for v in fps],
                                "spread": [round(min(fps), 2), round(max(fps), 2)],
                                "u": round(statistics.median(fps) / u, 3),
                                "p_fake": sorted({x["p_fake"] for x in xs})}
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
