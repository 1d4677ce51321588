"""Fidelity of dfserve's crops and verdicts to the seed pipeline on the generated test corpus (README figures).

Three generated clips (640x360 H.264, 480x272 HEVC zooming, 1280x720 H.264), first 20 frames, two seeded
checkpoints (mild random weights, and sharpened ones whose per-frame logits are a few units), through
`dfserve.bench.fidelity`: box IoU with the seed's dlib boxes and |dp_fake| with the seed pipeline's verdict,
with `--box retinaface`, `--box seed` (default) and `--detector dlib`. About 3 minutes on 2 cores.

    PYTHONPATH=. python benchmarks/box_fidelity.py   # -> benchmarks/results/box_fidelity.json
"""
import json, sys, tempfile
from pathlib import Path
from dfserve import samples
from dfserve.export.checkpoint import random_seed_model, save_seed_checkpoint
from dfserve.bench.fidelity import fidelity, seed_verdicts
from dfserve.models import load_runtime, resolve_models
d = Path(tempfile.mkdtemp())
vids = [samples.make_face_video(d / "a.mp4", n_frames=20, width=640, height=360, codec="h264")["path"],
        samples.make_face_video(d / "b.mkv", n_frames=20, width=480, height=272, codec="hevc", seed=2, zoom=(0.6, 1.3))["path"],
        samples.make_face_video(d / "c.mp4", n_frames=20, width=1280, height=720, codec="h264", seed=1)["path"]]
out = {}
for name, model in (("seeded random weights (random_seed_model(0))", random_seed_model(0)),
                    ("sharpened weights (random_seed_model(5, logit_std=4.0))", random_seed_model(5, logit_std=4.0))):
    (d / f"{len(out)}").mkdir(); ck = save_seed_checkpoint(model, d / f"{len(out)}" / "model_90_acc_20_frames_final_data.pt")
    r = resolve_models(checkpoint=ck)
    rt = load_runtime("onnxruntime", r)
    out[name] = fidelity(vids, rt, seed_verdicts(vids, str(ck), 20), 20, r.model_id)
    print(name, json.dumps(out[name]), flush=True)
(Path(__file__).parent / "results" / "box_fidelity.json").write_text(json.dumps(out, indent=1) + "\n")
