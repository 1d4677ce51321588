"""How close dfserve's crops and verdicts are to the seed's whole pipeline, per box convention.

For each video, the first N frames: the seed's face boxes (dlib HOG on the OpenCV-decoded BGR frame,
first face, `pipeline.dlib_faces`) against the boxes the engine cropped (`--timeline`), as IoU, and
the verdict's |dp_fake| against the seed pipeline's (`SeedPipeline`, eager fp32 forward), for the
engine with `--box retinaface` (before the mapping), `--box seed` (after; the default) and
`--detector dlib` (the seed's detector in the engine). Same weights, same frames; frames without a
face are cropped whole (`--no-face frame`), as the seed does.

    python -m dfserve.bench.fidelity --checkpoint CKPT VIDEO... (prints JSON)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .. import spec
from ..pipeline.dlib_faces import css_to_box, dlib_face_locations
from ..pipeline.options import ScoreOptions
from ..pipeline.tracking import iou_matrix

MODES = {"retinaface boxes (before mapping)": {"box": spec.BOX_RETINAFACE},
         "seed boxes (after mapping, default)": {"box": spec.BOX_SEED},
         "--detector dlib": {"detector": spec.DETECTOR_DLIB}}


def seed_boxes(path: str, n_frames: int) -> List[Optional[np.ndarray]]:
    """The seed's face box (x1, y1, x2, y2) of each of the first n frames, None where dlib finds none."""
    from .seed_pipeline import opencv_frames

    locate = dlib_face_locations()
    out = []
    for _, frame in zip(range(n_frames), opencv_frames(path)):
        found = locate(frame)
        out.append(css_to_box(found[0]) if found else None)
    return out


def box_ious(seed: Sequence[Optional[np.ndarray]], timeline: list) -> List[float]:
    """IoU per frame where both the seed and the engine found a face."""
    ours = {t[0]: t[2] for t in timeline}
    return [float(iou_matrix(s, np.asarray(ours[i]))[0, 0]) for i, s in enumerate(seed)
            if s is not None and ours.get(i) is not None]


def fidelity(videos: Sequence[str], runtime, seed_p_fake: Dict[str, float], n_frames: int = 20,
             model_id: Optional[str] = None) -> dict:
    """Per mode: box IoU with the seed's boxes (mean, min over frames) and |dp_fake| with the seed's verdicts
    (mean, max over videos). `seed_p_fake`: the seed pipeline's p_fake per video path."""
    from ..scoring import scorer_for

    boxes = {v: seed_boxes(v, n_frames) for v in videos}
    out = {"frames_per_video": n_frames, "videos": len(videos), "modes": {}}
    for name, kw in MODES.items():
        opts = ScoreOptions(sample=f"first:{n_frames}", no_face="frame", timeline=True, **kw).validate()
        rows = {r["path"]: r for r in scorer_for(runtime, opts, model_id).score(list(videos))}
        ious = [x for v in videos for x in box_ious(boxes[v], rows[v].get("timeline") or [])]
        dps = [abs(rows[v]["p_fake"] - seed_p_fake[v]) for v in videos
               if rows[v].get("p_fake") is not None and seed_p_fake.get(v) is not None]
        out["modes"][name] = {
            "box_iou_mean": round(float(np.mean(ious)), 4) if ious else None,
            "box_iou_min": round(float(np.min(ious)), 4) if ious else None, "frames_compared": len(ious),
            "dp_fake_mean": round(float(np.mean(dps)), 6) if dps else None,
            "dp_fake_max": round(float(np.max(dps)), 6) if dps else None}
    return out


def seed_verdicts(videos: Sequence[str], checkpoint: str, n_frames: int) -> Dict[str, float]:
    from ..export.checkpoint import load_seed_model
    from ..export.reference import SeedReference
    from .seed_pipeline import SeedPipeline

    pipe = SeedPipeline(SeedReference(load_seed_model(checkpoint)))
    return {v: pipe.run(v, n_frames).verdict.p_fake for v in videos}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="dfserve's crops and verdicts against the seed pipeline's")
    ap.add_argument("videos", nargs="+")
    ap.add_argument("--checkpoint", required=True, help="seed checkpoint (the same weights for both)")
    ap.add_argument("--frames", type=int, default=20, help="first N frames of each video (the seed app's)")
    a = ap.parse_args(argv)
    from ..models import load_runtime, resolve_models

    resolved = resolve_models(checkpoint=Path(a.checkpoint))
    rt = load_runtime("onnxruntime", resolved)
    res = fidelity(a.videos, rt, seed_verdicts(a.videos, a.checkpoint, a.frames), a.frames, resolved.model_id)
    json.dump(res, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
