"""`dfserve demo`: the main job on a fresh machine, end to end with the embedded runtime."""
from __future__ import annotations

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


def run(workdir: Path, models_dir: Path, progress: bool = True) -> int:
    from .export.onnx_export import UNTRAINED_WARNING, export_models
    from .pipeline.options import ScoreOptions
    from .scoring import ScorerConfig, make_scorer, score_paths

    work = Path(workdir)
    videos = work / "sample videos"
    if not (videos / "ground_truth.json").is_file():
        print(f"generating sample videos in {videos} ...", file=sys.stderr)
        make_demo_videos(videos)
    ckpts = sorted(Path(models_dir).glob("*.pt")) if Path(models_dir).is_dir() else []
    config = ScorerConfig()
    if ckpts:
        config.checkpoint = ckpts[0]
        print(f"using checkpoint {ckpts[0]}", file=sys.stderr)
    else:
        banner = "!" * 100
        print(f"{banner}\nNo checkpoint (*.pt) in {models_dir}/: the demo uses RANDOM weights.\n"
              f"{UNTRAINED_WARNING}\n{banner}", file=sys.stderr)
        mdir = work / "models-random-seed0"
        if not (mdir / "metadata.json").is_file():
            print(f"exporting random-weight models to {mdir} (about half a minute) ...", file=sys.stderr)
            export_models(mdir, random_init=True, seed=0)
        config.models = mdir
    out = work / "scores.jsonl"
    run1 = score_paths([str(videos)], ScoreOptions(), config, out=out, progress=progress)
    out2 = work / "scores_precropped.jsonl"
    crops_opts = ScoreOptions(faces="precropped")
    run2 = score_paths([str(videos / "face crops.mp4")], crops_opts, config, out=out2, progress=progress,
                       summary=False, scorer=make_scorer(crops_opts, config))
    print(f"\nrows written to {out} (and {out2} for the pre-cropped video scored with --faces precropped)",
          file=sys.stderr)
    if not ckpts:
        print(f"\n!!! {UNTRAINED_WARNING}", file=sys.stderr)
    return 130 if (run1.interrupted or run2.interrupted) else 0
