"""Issue 23: the detector input by OpenCV's whole-factor filters (`resize.downscale_whole`, the same bytes as
Pillow) against Pillow's C resize (before), end to end. Each configuration in its own process, rounds
interleaved: `--sample all` frames/s of a 10-s 720p clip (a whole factor: 1280x720 -> 640x360), the process's
CPU seconds (cores busy), p_fake (must be identical: same bytes), u (onnxruntime fp32 classifier faces/s at batch
8) each round, and the detector input alone per frame (one thread) both ways. OpenCV's own thread count is
also compared (its default, every core, against 1).

    PYTHONPATH=. python benchmarks/detector_input_ab.py --workdir /tmp/dfbench --rounds 3 \\
        --out benchmarks/results/<machine>/detector_input_ab.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from ab_common import child, interleaved, summary, timed_score, unit_u, write


def one(models: str, video: str, precision: str, way: str) -> dict:
    from dfserve.models import load_runtime, resolve_models
    from dfserve.pipeline import faces
    from dfserve.pipeline.engine import Scorer

    if way == "pillow":
        faces.downscale_whole = lambda img, size: None  # the Pillow branch of faces.downscale_frame (before)
    elif way == "opencv-1":
        import cv2

        cv2.setNumThreads(1)
    rt = load_runtime("openvino", resolve_models(models=models), precision=precision)
    return timed_score(lambda opts: Scorer(rt, opts), video)


def alone(video: str) -> dict:
    """The detector input of one 720p frame, one thread, both ways (median ms of 30) and equal bytes."""
    import cv2
    import numpy as np
    from PIL import Image

    from dfserve.pipeline.decode import DecodeStats, iter_frames, probe
    from dfserve.pipeline.sampling import parse_policy
    from dfserve.resize import downscale_whole

    cv2.setNumThreads(1)
    _, chunk = next(iter(iter_frames(video, parse_policy("first:1"), probe(video), DecodeStats(), 1)))
    frame = chunk[0]
    ways = {"pillow": lambda: np.asarray(Image.fromarray(frame).resize((640, 360), Image.BILINEAR)),
            "opencv": lambda: downscale_whole(frame, (360, 640))}
    out = {"equal_bytes": bool(np.array_equal(ways["pillow"](), ways["opencv"]()))}
    for name, fn in ways.items():
        ts = []
        for _ in range(30):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        out[f"{name}_ms"] = round(statistics.median(ts) * 1e3, 3)
    return out


CONFIGS = [("openvino fp32, Pillow (before)", "fp32", "pillow"),
           ("openvino fp32, OpenCV whole factor", "fp32", "opencv"),
           ("openvino fp32, OpenCV whole factor, 1 OpenCV thread", "fp32", "opencv-1"),
           ("openvino int8, Pillow (before)", "int8", "pillow"),
           ("openvino int8, OpenCV whole factor", "int8", "opencv"),
           ("openvino int8, OpenCV whole factor, 1 OpenCV thread", "int8", "opencv-1")]


def _sub(a, *args) -> dict:
    return child(__file__, a.models, a.video, *args)


def prepare(work: Path) -> tuple:
    """(models dir, 720p clip): seeded random weights (UNTRAINED) with their int8 variant, and the bench's clip."""
    from dfserve import samples
    from dfserve.bench.run import ensure_models
    from dfserve.export.precision import export_precisions

    work.mkdir(parents=True, exist_ok=True)
    _, models, _ = ensure_models(work, None)
    meta = json.loads((Path(models) / "metadata.json").read_text())
    if "int8" not in meta.get("precisions", {}):
        export_precisions(Path(models), sorted(set(meta.get("precisions", {})) | {"int8"}), force=True)
    clip = work / "720p_h264_10s.mp4"
    if not clip.is_file():
        samples.make_face_video(clip, n_frames=300, width=1280, height=720, fps=30, codec="h264")
    return models, str(clip)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/dfbench", help="models and the clip are made here once")
    ap.add_argument("--models", help=argparse.SUPPRESS)
    ap.add_argument("--video", help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out")
    ap.add_argument("--one", nargs=2, metavar=("PRECISION|u|alone", "WAY"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        p, way = a.one
        res = unit_u(a.models) if p == "u" else alone(a.video) if p == "alone" else one(a.models, a.video, p, way)
        print(json.dumps(res))
        return 0
    if not (a.models and a.video):
        a.models, a.video = prepare(Path(a.workdir))
    single = _sub(a, "alone", "-")
    print(f"detector input alone, one 720p frame: {single}", file=sys.stderr, flush=True)
    ab = interleaved(CONFIGS, a.rounds, lambda cfg: _sub(a, cfg[1], cfg[2]), lambda: _sub(a, "u", "-"))
    res = {"command": "python benchmarks/detector_input_ab.py " + " ".join(sys.argv[1:]),
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "video": os.path.basename(a.video), "rounds": a.rounds,
           "cpu_count": os.cpu_count(), "weights": "seeded random (seed 0), UNTRAINED",
           "detector_input_alone_720p": single, **summary(ab)}
    write(res, a.out)
    return 0

if __name__ == "__main__":
    sys.exit(main())
