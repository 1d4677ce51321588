"""How far dfserve's old frame colours (PyAV's default: the stream's own matrix) drifted from the seed's OpenCV
frames, and what the seed rule costs in decode speed. Writes benchmarks/results/<machine>/colour_drift.json.

Per clip kind (samples.COLOUR_CLIPS, 160x128, 8 face crops): per-pixel drift of `--colors stream` (the old
behaviour) and of `--colors seed` against cv2.VideoCapture's frames, and the verdict drift (p_fake) of the seed's
forward with a seeded random checkpoint on pre-cropped faces. Then decode frames/s of a 720p H.264 clip, both rules.

    python benchmarks/colour_drift.py [--out benchmarks/results/amd-epyc-2c-nogpu/colour_drift.json]
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from dfserve import samples
from dfserve.bench.seed_pipeline import opencv_frames
from dfserve.export.checkpoint import random_seed_model
from dfserve.export.reference import SeedReference
from dfserve.pipeline.decode import DecodeStats, iter_frames, probe
from dfserve.pipeline.sampling import parse_policy


def frames(path, colors):
    return [f for _, fr in iter_frames(path, parse_policy("all"), probe(path), DecodeStats(), colors=colors) for f in fr]


def pixel_drift(a, b):
    d = np.abs(np.stack(a).astype(int) - np.stack(b).astype(int))
    return {"max": int(d.max()), "mean": round(float(d.mean()), 3), "frac_differing": round(float(np.mean(d.max(-1) > 0)), 4)}


def decode_fps(path, colors, repeat=2):
    best = 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        n = len(frames(path, colors))
        best = max(best, n / (time.perf_counter() - t))
    return round(best, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "amd-epyc-2c-nogpu" / "colour_drift.json")
    args = ap.parse_args()
    ref = SeedReference(random_seed_model(seed=1234))
    crops = samples.astronaut_face_crops(8, seed=3)
    res = {"checkpoint": "random_seed_model(seed=1234), untrained", "clips": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in samples.COLOUR_CLIPS:
            clip = samples.make_colour_clip(Path(tmp) / f"{kind}.mp4", kind, frames=crops)
            cv, old, new = list(opencv_frames(clip["path"])), frames(clip["path"], "stream"), frames(clip["path"], "seed")
            p_cv = ref.predict_frames(cv, "mean").p_fake
            res["clips"][kind] = {
                "pix_fmt": clip["pix_fmt"], "tags": clip["tags"],
                "old_stream_vs_opencv": pixel_drift(old, cv), "seed_vs_opencv": pixel_drift(new, cv),
                "p_fake_opencv": round(p_cv, 6),
                "p_fake_drift_old": round(abs(ref.predict_frames(old, "mean").p_fake - p_cv), 6),
                "p_fake_drift_seed": round(abs(ref.predict_frames(new, "mean").p_fake - p_cv), 6)}
            print(kind, json.dumps(res["clips"][kind]))
        hd = Path(tmp) / "720p.mp4"
        samples.make_colour_clip(hd, "bt709", frames=samples.face_frames(60, 1280, 720))
        res["decode_720p_h264_bt709_frames_per_s"] = {"stream (old)": decode_fps(str(hd), "stream"),
                                                      "seed": decode_fps(str(hd), "seed")}
        hd10 = Path(tmp) / "720p10.mp4"
        samples.make_colour_clip(hd10, "untagged 10-bit", frames=samples.face_frames(30, 1280, 720))
        res["decode_720p_hevc_10bit_frames_per_s"] = {"stream (old)": decode_fps(str(hd10), "stream"),
                                                      "seed": decode_fps(str(hd10), "seed")}
    print(json.dumps({k: v for k, v in res.items() if k != "clips"}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
