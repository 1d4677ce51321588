"""Split decode speed: a 10-s 720p H.264 clip (300 frames, face pixels) decoded to BGR with `--split` 1, 2, ...,
runs interleaved (A B A B ...), medians of frames/s. Two GOP lengths: x264's default (one key frame every 250
frames) and a 2-s GOP (key frame every 60 frames, as streaming encoders write). Prints JSON; --out writes it.

    python benchmarks/split_decode.py [--splits 1 2] [--reps 5] [--out benchmarks/results/<machine>/split_decode.json]
"""
import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from dfserve import samples
from dfserve.pipeline.decode import DecodeStats, probe
from dfserve.pipeline.sampling import parse_policy
from dfserve.pipeline.split_decode import cpu_cores, iter_frames_split


def decode_once(path, split):
    info, stats = probe(path), DecodeStats()
    t = time.perf_counter()
    n = sum(len(idx) for idx, _ in iter_frames_split(path, parse_policy("all"), info, stats, split=split))
    return n / (time.perf_counter() - t), stats.ranges


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splits", nargs="+", default=["1", "2"])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    result = {"cores": cpu_cores(), "clip": "300 frames 1280x720 H.264 (x264 ultrafast), sample all, BGR",
              "reps": a.reps, "frames_per_s": {}, "ranges": {}}
    with tempfile.TemporaryDirectory() as tmp:
        clips = {"gop250": {}, "gop60": {"codec_options": samples.keyframe_options("h264", 60, bframes=0)}}
        for name, kw in clips.items():
            path = str(Path(tmp) / f"{name}.mp4")
            samples.make_face_video(path, 300, 1280, 720, **kw)
            decode_once(path, "1")  # warm the page cache
            runs = {s: [] for s in a.splits}
            for _ in range(a.reps):
                for s in a.splits:
                    fps, ranges = decode_once(path, s)
                    runs[s].append(fps)
                    result["ranges"][f"{name} split {s}"] = ranges
            result["frames_per_s"][name] = {f"split {s}": round(statistics.median(v), 1) for s, v in runs.items()}
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
