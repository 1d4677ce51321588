"""Fit the mapping from RetinaFace's face box to the box the seed's dlib HOG detector draws.

The seed crops faces with `face_recognition.face_locations` (dlib HOG, upsample 1, trimmed to the
image); dfserve finds them with RetinaFace, whose boxes are taller and sit higher. This script
collects pairs of boxes on real faces, fits a small linear mapping and checks it on held-out faces:

- faces: scikit-image's astronaut (public domain); frames of dfserve's generated test videos (the
  astronaut pasted, moving and zooming, H.264-compressed); and, when `--insightface-images` points at
  the `insightface/data/images` folder of the insightface 2.1 wheel (`pip download --no-deps
  insightface==2.1`, unzip; nothing is installed, no image is committed), its group photo t1.jpg
  (6 faces) and the aligned face Tom_Hanks_54745.png. (skimage's camera(): dlib finds no face; the
  lfw_subset faces are 25x25, below dlib's 40-pixel minimum at upsample 1.)
- augmentation per draw: scale, shift, rotation (+-8 degrees), brightness / contrast, horizontal
  flip, JPEG compression (quality 30-95).
- RetinaFace runs as the pipeline runs it (frames downscaled to at most spec.DETECTOR_MAX_SIDE,
  `detection.detections`), dlib as the seed runs it (`pipeline.dlib_faces`, on the BGR image). Each
  dlib face is paired with the RetinaFace box of highest IoU (at least 0.3).
- the model: with RetinaFace's box centre (cx, cy) and size (w, h), the dlib box is
      cx' = cx + a_x w,   cy' = cy + a_y h,   w' = s_w w,   h' = s_h h
  (four constants, least squares on the normalised offsets/ratios), then trimmed to the frame as
  face_recognition trims. A variant with the five landmarks (eye/mouth geometry as extra regressors)
  is fitted and reported for comparison.
- held-out evaluation: draws are split by a seeded random 70/30 split within each source, and also
  leave-one-source-out; IoU with dlib's box before (raw RetinaFace) and after the mapping, min /
  mean per source.

Run (about two minutes on two cores):
    python benchmarks/fit_box_mapping.py --insightface-images /tmp/if/insightface/data/images
Writes benchmarks/results/box_mapping.json and prints the constants for dfserve/spec.py.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from dfserve import samples, spec
from dfserve.nets.retinaface import shipped_onnx_bytes
from dfserve.pipeline.detection import anchors, decode_boxes, nms
from dfserve.pipeline.dlib_faces import css_to_box, dlib_face_locations
from dfserve.pipeline.faces import detector_input
from dfserve.pipeline.runtimes.ort import ort_session
from dfserve.pipeline.tracking import iou_matrix

HERE = Path(__file__).parent


def sources(insightface_images: Path | None, video_frames: int) -> dict:
    """name -> list of BGR images with faces."""
    out = {"astronaut": [samples.astronaut_bgr()]}
    with tempfile.TemporaryDirectory() as tmp:
        import av

        frames = []
        for k, (w, h, zoom) in enumerate(((640, 360, (0.9, 1.4)), (480, 272, (0.6, 1.3)))):
            v = samples.make_face_video(Path(tmp) / f"v{k}.mp4", n_frames=video_frames, width=w, height=h,
                                        seed=k, zoom=zoom)
            with av.open(v["path"]) as c:
                frames += [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
        out["video_frames"] = frames
    if insightface_images:
        import cv2

        out["t1_group"] = [cv2.imread(str(insightface_images / "t1.jpg"))]
        out["aligned_face"] = [cv2.imread(str(insightface_images / "Tom_Hanks_54745.png"))]
    return out


def augment(img: np.ndarray, rng: np.random.Generator, scale_range) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    s = float(rng.uniform(*scale_range))
    angle = float(rng.uniform(-8, 8))
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, s)
    nw, nh = max(64, int(w * s)), max(64, int(h * s))
    m[0, 2] += (nw - w) / 2 + rng.uniform(-0.08, 0.08) * nw
    m[1, 2] += (nh - h) / 2 + rng.uniform(-0.08, 0.08) * nh
    out = cv2.warpAffine(img, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    gain, bias = rng.uniform(0.7, 1.3), rng.uniform(-25, 25)
    out = np.clip(out.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
    ok, enc = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 96))])
    return cv2.imdecode(enc, cv2.IMREAD_COLOR)


class Retina:
    """RetinaFace as the pipeline runs it, with the landmarks decoded too (for the comparison model)."""

    def __init__(self):
        self.sess = ort_session(shipped_onnx_bytes())

    def __call__(self, img: np.ndarray):
        x, scale = detector_input([img])
        mean = np.asarray(spec.DETECTOR_MEAN_BGR, np.float32).reshape(1, 3, 1, 1)
        loc, conf, lm = self.sess.run(None, {"input": x - mean})
        h, w = x.shape[2], x.shape[3]
        pri = anchors(h, w)
        sel = np.nonzero(conf[0, :, 1] > spec.DETECTOR_SCORE_THRESHOLD)[0]
        if sel.size == 0:
            return np.zeros((0, 4)), np.zeros((0, 10))
        boxes = decode_boxes(loc[0, sel], pri[sel], h, w)
        keep = nms(boxes, conf[0, sel, 1])
        p = pri[sel][keep]
        vc = spec.DETECTOR_VARIANCE[0]
        pts = lm[0, sel][keep].reshape(-1, 5, 2)
        pts = (p[:, None, :2] + pts * vc * p[:, None, 2:]) * np.array([w, h])
        return boxes[keep] / scale, pts.reshape(-1, 10) / scale


def collect(srcs: dict, draws: dict, seed: int) -> list:
    retina, dlib = Retina(), dlib_face_locations()
    rng = np.random.default_rng(seed)
    pairs = []
    for name, imgs in srcs.items():
        n, scale_range = draws[name]
        for d in range(n):
            img = imgs[d % len(imgs)]
            aug = augment(img, rng, scale_range) if d >= len(imgs) else img
            found = [css_to_box(c) for c in dlib(aug)]
            boxes, pts = retina(aug)
            if not found or not len(boxes):
                continue
            iou = iou_matrix(np.stack(found), boxes)
            for i, db in enumerate(found):
                j = int(np.argmax(iou[i]))
                if iou[i, j] >= 0.3:
                    pairs.append({"source": name, "draw": d, "size": list(aug.shape[:2]), "dlib": db.tolist(),
                                  "retina": boxes[j].tolist(), "landmarks": pts[j].tolist()})
    return pairs


def geometry(b: np.ndarray):
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    return (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, w, h


def targets(dl: np.ndarray, rt: np.ndarray) -> np.ndarray:
    cx, cy, w, h = geometry(rt)
    dcx, dcy, dw, dh = geometry(dl)
    return np.stack([(dcx - cx) / w, (dcy - cy) / h, dw / w, dh / h], 1)


def landmark_features(rt: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Regressors from the five landmarks (eyes, nose, mouth corners), normalised by the box."""
    cx, cy, w, h = geometry(rt)
    p = pts.reshape(-1, 5, 2)
    eyes, mouth, nose = p[:, :2].mean(1), p[:, 3:].mean(1), p[:, 2]
    return np.stack([(eyes[:, 1] - cy) / h, (mouth[:, 1] - cy) / h, (nose[:, 0] - cx) / w,
                     (mouth[:, 1] - eyes[:, 1]) / h, (p[:, 1, 0] - p[:, 0, 0]) / w], 1)


def design(rt: np.ndarray, pts: np.ndarray, with_landmarks: bool) -> np.ndarray:
    one = np.ones((len(rt), 1))
    return np.hstack([one, landmark_features(rt, pts)]) if with_landmarks else one


def fit(rt, pts, dl, with_landmarks: bool) -> np.ndarray:
    coef, *_ = np.linalg.lstsq(design(rt, pts, with_landmarks), targets(dl, rt), rcond=None)
    return coef  # [features, 4]


def apply(coef, rt, pts, sizes, with_landmarks: bool) -> np.ndarray:
    t = design(rt, pts, with_landmarks) @ coef
    cx, cy, w, h = geometry(rt)
    ncx, ncy, nw, nh = cx + t[:, 0] * w, cy + t[:, 1] * h, t[:, 2] * w, t[:, 3] * h
    out = np.stack([ncx - nw / 2, ncy - nh / 2, ncx + nw / 2, ncy + nh / 2], 1)
    return trim(out, sizes)


def trim(boxes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """face_recognition's trimming of a box to the image (sizes [N,2] = height, width)."""
    out = boxes.copy()
    out[:, 0], out[:, 1] = np.maximum(out[:, 0], 0), np.maximum(out[:, 1], 0)
    out[:, 2], out[:, 3] = np.minimum(out[:, 2], sizes[:, 1]), np.minimum(out[:, 3], sizes[:, 0])
    return out


def ious(a, b) -> np.ndarray:
    return np.array([iou_matrix(x, y)[0, 0] for x, y in zip(a, b)])


def summary(v: np.ndarray) -> dict:
    return {"n": int(len(v)), "min": round(float(v.min()), 4), "mean": round(float(v.mean()), 4),
            "p10": round(float(np.percentile(v, 10)), 4)} if len(v) else {"n": 0}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--insightface-images", type=Path, help="insightface 2.1 wheel's insightface/data/images folder")
    ap.add_argument("--draws", type=int, default=60, help="augmented draws per single-face source")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "box_mapping.json")
    a = ap.parse_args(argv)
    srcs = sources(a.insightface_images, video_frames=12)
    draws = {"astronaut": (a.draws, (0.5, 1.6)), "video_frames": (a.draws, (0.8, 1.6)),
             "t1_group": (max(a.draws // 3, 1), (0.5, 1.1)), "aligned_face": (a.draws, (1.2, 3.0))}
    pairs = collect(srcs, draws, a.seed)
    src = np.array([p["source"] for p in pairs])
    dl, rt = np.array([p["dlib"] for p in pairs], float), np.array([p["retina"] for p in pairs], float)
    pts, sizes = np.array([p["landmarks"] for p in pairs], float), np.array([p["size"] for p in pairs], float)
    rng = np.random.default_rng(a.seed + 1)
    # split by draw (the faces of one image stay together), 30 % held out within each source
    test = np.zeros(len(pairs), bool)
    for s in np.unique(src):
        dr = np.unique([p["draw"] for p, x in zip(pairs, src) if x == s])
        held = set(rng.choice(dr, max(1, int(round(0.3 * len(dr)))), replace=False).tolist())
        test |= (src == s) & np.isin([p["draw"] for p in pairs], list(held))
    report = {"pairs": int(len(pairs)), "train": int((~test).sum()), "held_out": int(test.sum()), "models": {}}
    before = ious(trim(rt, sizes), dl)
    for label, lmk in (("box", False), ("box+landmarks", True)):
        coef = fit(rt[~test], pts[~test], dl[~test], lmk)
        after = ious(apply(coef, rt, pts, sizes, lmk), dl)
        per = {s: {"before": summary(before[test & (src == s)]), "after": summary(after[test & (src == s)])}
               for s in np.unique(src)}
        loso = {}
        for s in np.unique(src):  # leave one source out: fit on the others, test on all of this one
            c = fit(rt[src != s], pts[src != s], dl[src != s], lmk)
            loso[s] = summary(ious(apply(c, rt[src == s], pts[src == s], sizes[src == s], lmk), dl[src == s]))
        plain = np.array([p["draw"] < len(srcs[p["source"]]) for p in pairs])  # images as shipped, no augmentation
        report["models"][label] = {
            "coef": np.round(coef, 4).tolist(),
            "unaugmented_before": summary(before[plain]), "unaugmented_after": summary(after[plain]),
            "held_out_before": summary(before[test]), "held_out_after": summary(after[test]),
            "per_source_held_out": per, "leave_one_source_out_after": loso}
    coef = fit(rt, pts, dl, False)  # the shipped constants: box model, all pairs
    report["spec"] = {"BOX_SEED_CENTER_SHIFT": [round(float(coef[0, 0]), 4), round(float(coef[0, 1]), 4)],
                      "BOX_SEED_SIZE_RATIO": [round(float(coef[0, 2]), 4), round(float(coef[0, 3]), 4)]}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "models"}, indent=1))
    for label, m in report["models"].items():
        print(label, "held-out before", m["held_out_before"], "after", m["held_out_after"])
        print("   unaugmented before", m["unaugmented_before"], "after", m["unaugmented_after"])
        for s, v in m["per_source_held_out"].items():
            print("   ", s, "before", v["before"], "after", v["after"], "| leave-source-out", m["leave_one_source_out_after"][s])
    return report


if __name__ == "__main__":
    main()
