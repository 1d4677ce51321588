"""`--detect-every K` against per-frame detection: box disagreement and speed (issue 11 item 4).

    python benchmarks/detect_every.py    # after `dfserve bench --runtimes ...` (uses its models and 720p video)

Scores generated face videos (moving 640x360 H.264, zooming 480x272 HEVC, the bench's 720p H.264) with
int8 OpenVINO at K = 1, 2, 4, 8 and reports, per K, how many frames' boxes differ from per-frame detection
(face / no-face mismatch or IoU < 0.5), the mean and min IoU, frames/s and the verdict. Writes
benchmarks/results/<machine>/detect_every.json.
"""
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    import tempfile

    from dfserve import samples
    from dfserve.bench.run import machine_info, machine_slug
    from dfserve.pipeline.engine import ScoreOptions
    from dfserve.pipeline.sampling import parse_policy
    from dfserve.pipeline.detect_every import box_disagreement
    from dfserve.scoring import ScorerConfig, make_scorer

    work = ROOT / ".cache" / "bench" / "runtimes"  # dfserve bench --runtimes (default --workdir)
    models = next((work / "cache" / "models").iterdir())
    d = Path(tempfile.mkdtemp(prefix="detect-every-"))
    vids = {"640x360 h264 moving": samples.make_face_video(d / "a.mp4", n_frames=90, width=640, height=360,
                                                           codec="h264")["path"],
            "480x272 hevc zooming": samples.make_face_video(d / "b.mkv", n_frames=90, width=480, height=272,
                                                            codec="hevc", seed=2, zoom=(0.6, 1.3))["path"],
            "720p h264 (bench)": str(work / "720p_h264_10s.mp4")}
    opts = ScoreOptions(timeline=True, sample=parse_policy("all"))
    out = {}
    for name, p in vids.items():
        res = {}
        for k in (1, 2, 4, 8):
            sc = make_scorer(opts, ScorerConfig(models=models, runtime="openvino", precision="int8", detect_every=k))
            t = time.perf_counter()
            row = next(iter(sc.score([p])))
            res[k] = (row, row["frames_scored"] / (time.perf_counter() - t))
        ref = res[1][0]["timeline"]
        out[name] = {k: dict(box_disagreement(ref, r["timeline"]), frames_per_s=round(f, 1), p_fake=r["p_fake"])
                     for k, (r, f) in res.items()}
        for k, v in out[name].items():
            print(name, k, v, flush=True)
    dst = ROOT / "benchmarks" / "results" / machine_slug(machine_info()) / "detect_every.json"
    dst.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
