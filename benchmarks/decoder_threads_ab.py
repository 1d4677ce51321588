"""Issue 23: FFmpeg's decoder threads on a 2-core machine, end to end: FFmpeg's own choice (0, "auto") against
one thread (`$DFSERVE_DECODER_THREADS`; `decode.decoder_threads()` picks 1 on 2 cores), OpenVINO fp32 and
int8, `--sample all` of a 10-s 720p clip, each configuration in its own process, rounds interleaved, u every
round (benchmarks/ab_common.py).

    PYTHONPATH=. python benchmarks/decoder_threads_ab.py --models DIR --video clip720.mp4 --rounds 4 --out OUT.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from ab_common import child, interleaved, summary, timed_score, unit_u, write

CONFIGS = [("fp32 dec auto", "fp32", "auto"), ("fp32 dec 1", "fp32", "1"),
           ("int8 dec auto", "int8", "auto"), ("int8 dec 1", "int8", "1")]


def one(models: str, video: str, precision: str, dec: str) -> dict:
    os.environ["DFSERVE_DECODER_THREADS"] = "0" if dec == "auto" else dec
    from dfserve.models import load_runtime, resolve_models
    from dfserve.pipeline.engine import Scorer

    rt = load_runtime("openvino", resolve_models(models=models), precision=precision)
    return timed_score(lambda opts: Scorer(rt, opts), video)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True)
    ap.add_argument("--video", required=True)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out")
    ap.add_argument("--one", nargs=2, metavar=("PRECISION|u", "DECODER_THREADS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        p, dec = a.one
        print(json.dumps(unit_u(a.models) if p == "u" else one(a.models, a.video, p, dec)))
        return 0
    ab = interleaved(CONFIGS, a.rounds, lambda c: child(__file__, a.models, a.video, c[1], c[2]),
                     lambda: child(__file__, a.models, a.video, "u", "-"))
    write({"command": "python benchmarks/decoder_threads_ab.py " + " ".join(sys.argv[1:]),
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "video": os.path.basename(a.video), "rounds": a.rounds,
           **summary(ab)}, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
