"""`dfserve demo`: the main job on a fresh machine, end to end with the embedded runtime."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("dfserve.demo")


def make_demo_videos(folder: Path) -> list:
    from . import samples

    folder.mkdir(parents=True, exist_ok=True)
    truth = [
        samples.make_face_video(folder / "astronaut moving.mp4", n_frames=90, width=1280, height=720, codec="h264"),
        samples.make_face_video(folder / "astronaut zoom hevc.mkv", n_frames=60, width=640, height=360,
                                codec="hevc", seed=1, zoom=(0.6, 1.5)),
        samples.make_precropped_video(folder / "face crops.mp4", n_frames=30),
        samples.make_noface_video(folder / "coffee no face.mp4", n_frames=30),
        samples.make_corrupt_file(folder / "corrupt.mp4"),
    ]
    (folder / "ground_truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def run(args) -> int:
    from .commands import run_score
    from .export.onnx_export import UNTRAINED_WARNING, export_models

    work = Path(args.workdir)
    videos = work / "sample videos"
    if not (videos / "ground_truth.json").is_file():
        print(f"generating sample videos in {videos} ...", file=sys.stderr)
        make_demo_videos(videos)
    ckpts = sorted(Path(args.models_dir).glob("*.pt")) if Path(args.models_dir).is_dir() else []
    ns = {"checkpoint": None, "models": None}
    if ckpts:
        ns["checkpoint"] = ckpts[0]
        print(f"using checkpoint {ckpts[0]}", file=sys.stderr)
    else:
        banner = "!" * 100
        print(f"{banner}\nNo checkpoint (*.pt) in {args.models_dir}/: the demo uses RANDOM weights.\n"
              f"{UNTRAINED_WARNING}\n{banner}", file=sys.stderr)
        mdir = work / "models-random-seed0"
        if not (mdir / "metadata.json").is_file():
            print(f"exporting random-weight models to {mdir} (about half a minute) ...", file=sys.stderr)
            export_models(mdir, random_init=True, seed=0)
        ns["models"] = mdir
    out = work / "scores.jsonl"
    score_args = argparse.Namespace(paths=[str(videos)], out=out, resume=False, head="mean", sample="all", faces="detect",
                            no_face="skip", margin=0.0, timeline=False, batch=32, detect_size=640, decode_workers=2,
                            threads=0, no_progress=args.no_progress, no_summary=False, server=None, **ns)
    rc = run_score(score_args)
    precropped = argparse.Namespace(**{**vars(score_args), "paths": [str(videos / "face crops.mp4")], "faces": "precropped",
                               "out": work / "scores_precropped.jsonl", "no_summary": True})
    run_score(precropped)
    print(f"\nrows written to {out} (and {precropped.out} for the pre-cropped video scored with --faces precropped)",
          file=sys.stderr)
    if not ckpts:
        print(f"\n!!! {UNTRAINED_WARNING}", file=sys.stderr)
    return rc
