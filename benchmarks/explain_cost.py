"""What `--explain 5` adds to a 10-s 720p clip's scoring time (issue 24 item 5: at most +15 %).

    python benchmarks/explain_cost.py [--rounds 3] [--models DIR] [--video CLIP]

Scores the bench's 720p H.264 clip (`dfserve bench --runtimes`' 720p_h264_10s.mp4 and models in .cache/bench/runtimes;
generated there if missing: 300 frames, seeded UNTRAINED weights) with `--sample all`, onnxruntime fp32, one runtime
for every run, in interleaved rounds of three arms: `--explain 0`; `--explain 5` with the heat's occlusion windows
(spec.HEAT_WINDOW x HEAT_WINDOW cells every HEAT_STRIDE: 17 classifier passes per evidence frame); `--explain 5` with
the single-cell 14x14 occlusion it replaced (window 1, stride 1: 197 passes). Reports each arm's median wall time and
its ratio to `--explain 0`, the median of each round's ratio, and the heat alone (5 crops, both methods) over the
`--explain 0` time (the machine is shared: the load average is recorded with each run), and writes
benchmarks/results/<machine>/explain_cost.json.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ARMS = {"explain 0": (0, None), "explain 5 (windows)": (5, None), "explain 5 (single cells, before)": (5, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default=None, help="models dir (default: the bench's, exported if missing)")
    ap.add_argument("--video", default=None, help="clip (default: the bench's 720p_h264_10s.mp4, made if missing)")
    args = ap.parse_args()

    from dfserve import samples, spec
    from dfserve.bench.run import ensure_models, machine_info, machine_slug
    from dfserve.pipeline.engine import Scorer
    from dfserve.pipeline.options import ScoreOptions
    from dfserve.pipeline.runtimes.ort import OnnxRuntime

    work = ROOT / ".cache" / "bench" / "runtimes"  # dfserve bench --runtimes (default --workdir)
    video = Path(args.video) if args.video else work / "720p_h264_10s.mp4"
    if not video.is_file():
        work.mkdir(parents=True, exist_ok=True)
        samples.make_face_video(video, n_frames=300, width=1280, height=720, fps=30, codec="h264", seed=0)
    models = args.models or ensure_models(work, None)[1]
    rt = OnnxRuntime(models)
    window, stride = spec.HEAT_WINDOW, spec.HEAT_STRIDE

    def once(explain: int, cells) -> dict:
        # the heat reads spec.HEAT_WINDOW / HEAT_STRIDE at call time: the "before" arm sets both to 1
        spec.HEAT_WINDOW, spec.HEAT_STRIDE = (cells, cells) if cells else (window, stride)
        try:
            load = os.getloadavg()[0]
            t = time.perf_counter()
            row = next(iter(Scorer(rt, ScoreOptions(sample="all", explain=explain), model_id="bench").score([str(video)])))
            wall = time.perf_counter() - t
        finally:
            spec.HEAT_WINDOW, spec.HEAT_STRIDE = window, stride
        assert row["error"] is None and (explain == 0 or len(row["evidence"]) == explain), row
        return {"wall_s": round(wall, 3), "load_1min_before": round(load, 2), "frames_scored": row["frames_scored"]}

    once(0, None)  # warm-up: sessions, arenas, page cache
    runs = {a: [] for a in ARMS}
    for r in range(args.rounds):
        for arm, (explain, cells) in ARMS.items():
            runs[arm].append(once(explain, cells))
            print(f"round {r + 1} {arm}: {runs[arm][-1]}", flush=True)
    med = {a: statistics.median(x["wall_s"] for x in v) for a, v in runs.items()}
    base = med["explain 0"]
    # each round's arms ran back to back: their ratio to that round's --explain 0 is less exposed to the load drift
    paired = {a: round(statistics.median(x["wall_s"] / b["wall_s"] for x, b in zip(v, runs["explain 0"])), 3)
              for a, v in runs.items()}
    # the heat alone (what --explain adds after the frames are scored), 5 evidence crops, same runtime
    from dfserve.pipeline.evidence import occlusion_heat

    crops = samples.astronaut_face_crops(5, seed=3)
    heat_s = {}
    for arm, cells in (("windows", None), ("single cells, before", 1)):
        ts = []
        for _ in range(args.rounds):
            t = time.perf_counter()
            occlusion_heat(rt.classify, crops, window=cells, stride=cells)
            ts.append(time.perf_counter() - t)
        heat_s[arm] = round(statistics.median(ts), 3)
        print(f"heat of 5 crops, {arm}: median {heat_s[arm]} s", flush=True)
    passes_before = (spec.FACE_SIZE // spec.HEAT_PATCH) ** 2 + 1
    out = {
        "what": "wall time to score one 10-s 720p H.264 clip (300 frames, --sample all), onnxruntime fp32, "
                "interleaved rounds, medians; seeded UNTRAINED weights; shared machine (load recorded)",
        "video": video.name, "rounds": args.rounds, "machine": machine_info(),
        "heat": {"grid": spec.HEAT_GRID, "window_cells": window, "stride_cells": stride,
                 "passes_per_frame": spec.HEAT_PASSES, "passes_per_frame_before": passes_before},
        "median_wall_s": med,
        "ratio_to_explain_0": {a: round(m / base, 3) for a, m in med.items()},
        "median_paired_ratio": paired,
        "heat_of_5_crops_s": heat_s,
        "heat_of_5_crops_over_explain_0": {a: round(v / base, 3) for a, v in heat_s.items()},
        "runs": runs,
    }
    for a, m in med.items():
        print(f"{a}: median {m:.2f} s, x{m / base:.3f} (median of the rounds' ratios x{paired[a]})")
    dst = ROOT / "benchmarks" / "results" / machine_slug(machine_info()) / "explain_cost.json"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", dst.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
