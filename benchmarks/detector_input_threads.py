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
import sys
import time

from ab_common import child, interleaved, summary, timed_score, unit_u, write


def one(models: str, video: str, precision: str, threads: int) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from dfserve.models import load_runtime, resolve_models
    from dfserve.pipeline import faces
    from dfserve.pipeline.engine import Scorer

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
    return timed_score(lambda opts: Parallel(rt, opts), video)


CONFIGS = [("openvino fp32, detector input 1 thread (today)", "fp32", 1),
           ("openvino fp32, detector input 2 threads", "fp32", 2),
           ("openvino int8, detector input 1 thread (today)", "int8", 1),
           ("openvino int8, detector input 2 threads", "int8", 2)]


def _sub(a, *args) -> dict:
    return child(__file__, a.models, a.video, *args)


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
    ab = interleaved(CONFIGS, a.rounds, lambda cfg: _sub(a, cfg[1], cfg[2]), lambda: _sub(a, "u", 0))
    res = {"command": "python benchmarks/detector_input_threads.py " + " ".join(sys.argv[1:]),
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "video": os.path.basename(a.video), "rounds": a.rounds,
           **summary(ab)}
    write(res, a.out)
    return 0

if __name__ == "__main__":
    sys.exit(main())
