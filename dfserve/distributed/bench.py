"""Ray scaling on one machine: the same videos scored by 1 and by 2 local Ray actors (and, for
reference, by the local scorer without Ray).

    python -m dfserve.distributed.bench --out benchmarks/results/<machine>/ray_scaling.json

Generates `--videos` face videos (`--seconds` long, 640x360 H.264, real face pixels), exports
seeded random weights (speed only) unless `--models` is given, and times `score_paths` with a
`RayScorer` on a local Ray started per run (start-up and model loading are not timed, as for the
local scorer).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--actors", default="1,2", help="actor counts to compare, e.g. 1,2")
    ap.add_argument("--no-local", action="store_true", help="skip the reference run without Ray")
    ap.add_argument("--models", type=Path, help="folder made by `dfserve export` (default: random weights)")
    ap.add_argument("--workdir", type=Path, default=Path(".cache/ray-bench"))
    ap.add_argument("--note", default="", help="free text stored with the results (e.g. machine load)")
    ap.add_argument("--out", type=Path, required=True, help="JSON results file")
    args = ap.parse_args(argv)

    from .. import samples
    from ..pipeline.options import ScoreOptions
    from ..scoring import ScorerConfig, score_paths
    from .ray_scorer import RayScorer

    vdir = args.workdir / f"videos-{args.videos}x{args.seconds:g}s-{args.width}x{args.height}"
    vdir.mkdir(parents=True, exist_ok=True)
    n_frames = int(round(args.seconds * 30))
    for k in range(args.videos):
        p = vdir / f"face{k}.mp4"
        if not p.exists():
            samples.make_face_video(p, n_frames=n_frames, width=args.width, height=args.height, seed=k)
    models = args.models
    if models is None:
        models = args.workdir / "models-random-seed-0"
        if not (models / "metadata.json").exists():
            from ..export.onnx_export import export_models

            export_models(models, random_init=True, seed=0)
    opts, config = ScoreOptions(), ScorerConfig(models=models)
    paths = [str(vdir)]
    runs = []
    if not args.no_local:
        load0 = os.getloadavg()[0]
        run = score_paths(paths, opts, config, progress=False, summary=False)
        runs.append(_result("local scorer, no Ray (all cores, one process)", None, run, load0=load0))
    for n in [int(x) for x in args.actors.split(",") if x.strip()]:
        scorer = RayScorer(opts, config, address="local", actors=n, summary=False)
        load0 = os.getloadavg()[0]
        try:
            run = score_paths(paths, opts, config, progress=False, summary=False, scorer=scorer)
            nodes = dict(scorer.node_videos)
        finally:
            scorer.close()
        runs.append(_result(f"Ray, {n} local actor(s)", n, run, nodes, load0=load0))
    base = next((r for r in runs if r["actors"] == 1), None)
    for r in runs:
        if base and r["actors"]:
            r["speedup_vs_1_actor"] = round(r["frames_per_s"] / base["frames_per_s"], 3)
    result = {
        "what": "dfserve score --ray: 1 vs N local Ray actors on the same videos (frames/s = frames scored / "
                "wall time of the scoring loop; Ray start-up and model loading excluded)",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "gpu": None, "python": platform.python_version()},
        "videos": {"count": args.videos, "seconds": args.seconds, "frames_each": n_frames,
                   "size": f"{args.width}x{args.height}", "codec": "h264", "content": "dfserve.samples face video"},
        "options": opts.to_dict(),
        "weights": "seeded random (speed only)" if args.models is None else str(args.models),
        "ray": __import__("ray").__version__,
        "note": args.note,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for r in runs:
        print(f"{r['setting']:50s} {r['frames_per_s']:7.1f} frames/s  {r['videos_per_s']:.3f} videos/s"
              + (f"  x{r['speedup_vs_1_actor']:.2f}" if "speedup_vs_1_actor" in r else ""))
    print(f"wrote {args.out}")
    return 0


def _result(setting, actors, run, nodes=None, load0=None) -> dict:
    return {"setting": setting, "actors": actors, "threads_per_actor": (max(1, (os.cpu_count() or 1) // actors)
                                                                        if actors else os.cpu_count()),
            "videos": len(run.rows), "frames": run.frames, "seconds": round(run.seconds, 2),
            "frames_per_s": round(run.frames / max(run.seconds, 1e-9), 2),
            "videos_per_s": round(len(run.rows) / max(run.seconds, 1e-9), 4),
            "errors": sum(1 for r in run.rows if r["error"]), "per_node_videos": nodes,
            # 1-minute load average before / after: other work on the machine shows up here
            "load_avg_1min_before_after": [round(load0, 2) if load0 is not None else None,
                                           round(os.getloadavg()[0], 2)]}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
