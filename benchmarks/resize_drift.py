"""How far the owned face resize (dfserve.resize: the seed's Pillow, horizontal pass first) moves the
classifier's input and p_fake against what dfserve did before (the installed Pillow's resize) (issue 27).

    python benchmarks/resize_drift.py [--seed 1234]

Corpus: generated sample videos (dfserve.samples; real face pixels): faces found by the embedded detector
in moving / zooming / portrait / multi-face / size-switch videos, and the astronaut's face cut to the
face-box shapes the issue measured (130x170, 150x230, 96x144, 200x120, 300x390, width x height). For every
crop: does any pixel change, how many, by how much; then per-frame and per-clip p_fake (mean head) with a
seeded checkpoint (`random_seed_model(seed)`, what `dfserve export --random-init --seed N` writes), on the old
and the new inputs. Writes benchmarks/results/<machine>/resize_drift.json.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def pillow_resize(img):
    """What dfserve's contract.resize_bgr did before issue 27: the installed Pillow's resize."""
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((112, 112), Image.BILINEAR))


def corpus(d: Path):
    """{name: [uint8 BGR crops]}: detected faces of generated videos, and face-box shapes of the astronaut."""
    from dfserve import samples
    from dfserve.export.onnx_export import export_models
    from dfserve.pipeline.decode import DecodeStats, iter_frames, probe
    from dfserve.pipeline.faces import choose_faces, crop_box, detector_input
    from dfserve.pipeline.runtimes.ort import OnnxRuntime
    from dfserve.pipeline.sampling import parse_policy
    from dfserve.export.checkpoint import random_seed_model, save_seed_checkpoint

    ck = save_seed_checkpoint(random_seed_model(seed=7), d / "model_90_acc_20_frames_final_data.pt")
    rt = OnnxRuntime(export_models(d / "models", checkpoint=ck).out_dir)  # its detector only
    vids = {
        "640x360 h264 moving": samples.make_face_video(d / "a.mp4", n_frames=40, width=640, height=360, codec="h264"),
        "480x272 hevc zooming": samples.make_face_video(d / "b.mkv", n_frames=40, width=480, height=272,
                                                        codec="hevc", seed=2, zoom=(0.6, 1.3)),
        "180x320 portrait": samples.make_portrait_phone_video(d / "c.mp4", n_frames=20),
        "640x360 two faces": samples.make_multi_face_video(d / "e.mp4", [
            {"who": "astronaut", "scale": 0.9, "start": (20, 20), "end": (300, 40)},
            {"who": "cameraman", "scale": 1.2, "start": (380, 60), "end": (200, 30)}], n_frames=20),
        "360p->720p switch": samples.make_resolution_switch_video(d / "f.ts", n_each=12),
    }
    out = {}
    for name, v in vids.items():
        crops = []
        for _, frames in iter_frames(v["path"], parse_policy("every:1"), probe(v["path"]), DecodeStats(), 8):
            for f in frames:
                x, scale = detector_input([f])
                loc, sc, lm = rt.detect(x)
                c = choose_faces(loc, sc, x.shape[2], x.shape[3], scale, landmarks=lm)[0]
                if c is not None:
                    t, b, l, r = crop_box(c.box, *f.shape[:2])
                    crops.append(f[t:b, l:r])
        out[name] = crops
    from PIL import Image

    face = samples.astronaut_bgr()
    x1, y1, x2, y2 = samples.ASTRONAUT_FACE_BOX
    rng = np.random.default_rng(0)
    for w, h in ((130, 170), (150, 230), (96, 144), (200, 120), (300, 390)):
        clip = []
        for k in range(20):  # the face region jittered a little, scaled to the shape (generation, not the contract)
            dx, dy = rng.integers(-6, 7, 2)
            src = face[max(0, y1 - 20 + dy):y2 + 20 + dy, max(0, x1 - 15 + dx):x2 + 15 + dx]
            clip.append(np.asarray(Image.fromarray(np.ascontiguousarray(src)).resize((w, h), Image.BICUBIC)))
        out[f"face box {w}x{h}"] = clip
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    import PIL
    import torch

    from dfserve.bench.run import machine_info, machine_slug
    from dfserve.contract import normalize_faces
    from dfserve.export.checkpoint import random_seed_model
    from dfserve.nets.seed_model import FrameClassifier
    from dfserve.resize import resize_uint8

    torch.set_num_threads(2)
    cls = FrameClassifier(random_seed_model(seed=args.seed)).eval()

    def frame_logits(crops):
        with torch.no_grad():
            return np.concatenate([cls(torch.from_numpy(normalize_faces(crops[i:i + 16]))).double().numpy()
                                   for i in range(0, len(crops), 16)])

    def p_fake(logits):
        z = logits - logits.max(-1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(-1, keepdims=True))[..., 0]

    rows, tot = {}, {"crops": 0, "crops_changed": 0, "values": 0, "values_changed": 0}
    with tempfile.TemporaryDirectory(prefix="resize-drift-") as tmp:
        clips = corpus(Path(tmp))
    for name, crops in clips.items():
        old = np.stack([pillow_resize(c) for c in crops])
        new = np.stack([resize_uint8(c) for c in crops])
        diff = np.abs(old.astype(np.int16) - new.astype(np.int16))
        changed = diff.reshape(len(crops), -1).max(1) > 0
        lo, ln = frame_logits(old), frame_logits(new)
        dp = np.abs(p_fake(lo) - p_fake(ln))
        shapes = sorted({c.shape[:2] for c in crops})
        rows[name] = {
            "crops": len(crops), "crop_hxw_min": list(shapes[0]), "crop_hxw_max": list(shapes[-1]),
            "crops_changed": int(changed.sum()), "values_changed": int((diff > 0).sum()),
            "values_changed_fraction": float((diff > 0).mean()), "max_grey_levels": int(diff.max()),
            "frame_p_fake_abs_change_max": float(dp.max()), "frame_p_fake_abs_change_mean": float(dp.mean()),
            "clip_p_fake_old": float(p_fake(lo.mean(0))), "clip_p_fake_new": float(p_fake(ln.mean(0))),
        }
        rows[name]["clip_p_fake_abs_change"] = abs(rows[name]["clip_p_fake_old"] - rows[name]["clip_p_fake_new"])
        tot["crops"] += len(crops)
        tot["crops_changed"] += int(changed.sum())
        tot["values"] += diff.size
        tot["values_changed"] += int((diff > 0).sum())
        print(f"{name:24s} {rows[name]['crops_changed']:3d}/{len(crops):3d} crops changed, "
              f"{100 * rows[name]['values_changed_fraction']:.3f} % values, max {rows[name]['max_grey_levels']} grey; "
              f"frame |dp| max {rows[name]['frame_p_fake_abs_change_max']:.4f}, clip |dp| {rows[name]['clip_p_fake_abs_change']:.4f}")
    out_dir = ROOT / "benchmarks" / "results" / machine_slug(machine_info())
    out_dir.mkdir(parents=True, exist_ok=True)
    res = {"what": "owned face resize (seed-era Pillow, horizontal pass first) vs the installed Pillow's resize",
           "installed_pillow": PIL.__version__, "checkpoint": f"random_seed_model(seed={args.seed})",
           "total": tot, "clips": rows}
    (out_dir / "resize_drift.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(tot), "->", out_dir / "resize_drift.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
