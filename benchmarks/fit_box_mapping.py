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
- the model (dfserve/pipeline/box_convention.py, constants in spec.py): the face's scale S (eye-to-eye and
  eyes-to-mouth distances) and reference point (between the eye and mouth midpoints) from the five
  landmarks; a linear model (ridge least squares, BOX_SEED_COEF) on ten features normalised by S (the box's
  centre offset and sides, the inter-ocular distance, the nose, the eyes-to-mouth vector, the eye tilt)
  predicts dlib's box centre and side; the box is then snapped to dlib's discrete sides (36 * 1.2**l) and
  grid (left = (k + alpha) * side / 9 + beta: BOX_DLIB_GRID_X / _Y, fitted on the training boxes) and trimmed
  to the frame as face_recognition trims. For comparison the report carries the earlier box-only model
  (centre shift and side ratios, four constants) and the landmark model without the snapping.
- held-out evaluation: draws are split by a seeded random 70/30 split within each source (the faces of one
  draw stay together), and also leave-one-source-out; IoU with dlib's box before (raw RetinaFace) and
  after the mapping, min / mean per source. The shipped constants are fitted on all pairs.

Run (about two minutes on two cores; --pairs caches the collected boxes, --refit reuses them):
    python benchmarks/fit_box_mapping.py --insightface-images /tmp/if/insightface/data/images --draws 200
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
from dfserve.pipeline.box_convention import to_seed_boxes
from dfserve.pipeline.detection import anchors, decode_boxes, decode_landmarks, nms
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
    """RetinaFace as the pipeline runs it (raw boxes), with its decoded landmarks."""

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
        pts = decode_landmarks(lm[0, sel[keep]], pri[sel[keep]], h, w)
        return boxes[keep] / scale, pts / scale


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


def box_only_fit(rt, dl) -> np.ndarray:
    """The earlier model: centre shift and side ratios relative to RetinaFace's box (four constants)."""
    return targets(dl, rt).mean(0)


def box_only_apply(c, rt, sizes) -> np.ndarray:
    cx, cy, w, h = geometry(rt)
    ncx, ncy, nw, nh = cx + c[0] * w, cy + c[1] * h, c[2] * w, c[3] * h
    return trim(np.stack([ncx - nw / 2, ncy - nh / 2, ncx + nw / 2, ncy + nh / 2], 1), sizes)


def landmark_design(rt, pts):
    """The features of box_convention.to_seed_boxes (float64 here), their reference point and scale."""
    cx, cy, w, h = geometry(rt)
    p = pts
    ex, ey = (p[:, 0] + p[:, 2]) / 2, (p[:, 1] + p[:, 3]) / 2
    mx, my = (p[:, 6] + p[:, 8]) / 2, (p[:, 7] + p[:, 9]) / 2
    rx, ry = (ex + mx) / 2, (ey + my) / 2
    dx, dy, ux, uy = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1], ex - mx, ey - my
    iod2 = dx * dx + dy * dy
    s = np.sqrt(iod2 + ux * ux + uy * uy)
    f = np.stack([np.ones_like(s), (cx - rx) / s, (cy - ry) / s, w / s, h / s, np.sqrt(iod2) / s,
                  (p[:, 4] - rx) / s, (p[:, 5] - ry) / s, ux / s, uy / s, dy / s], 1)
    assert f.shape[1] == len(spec.BOX_SEED_FEATURES)
    return f, rx, ry, s


def landmark_fit(rt, pts, dl, ridge: float = 1e-3) -> np.ndarray:
    """BOX_SEED_COEF [3, features]: rows predict (dlib centre x - rx) / S, (centre y - ry) / S, side / S."""
    f, rx, ry, s = landmark_design(rt, pts)
    dcx, dcy, dw, dh = geometry(dl)
    y = np.stack([(dcx - rx) / s, (dcy - ry) / s, np.sqrt(dw * dh) / s], 1)
    a = f.T @ f + ridge * len(f) * np.eye(f.shape[1])
    a[0, 0] -= ridge * len(f)  # the intercept is not shrunk
    return np.linalg.solve(a, f.T @ y).T


def grid_fit(dl: np.ndarray) -> list:
    """dlib's grid offsets (alpha, beta) for x and y: left = (k + alpha) * cell + beta, cell = side / 9, from
    untrimmed square boxes (grid search on the mean absolute residual)."""
    w, h = dl[:, 2] - dl[:, 0], dl[:, 3] - dl[:, 1]
    ok = (np.abs(w - h) <= 1) & (dl[:, 0] > 0) & (dl[:, 1] > 0)
    lvl = np.round(np.log(w[ok] / spec.BOX_DLIB_SIDE0) / np.log(spec.BOX_DLIB_LEVEL_RATIO))
    cell = spec.BOX_DLIB_SIDE0 * spec.BOX_DLIB_LEVEL_RATIO ** lvl / spec.BOX_DLIB_CELLS
    out = []
    for coord in (dl[ok, 0], dl[ok, 1]):
        best = (np.inf, 0.0, 0.0)
        for alpha in np.linspace(0, 1, 101)[:-1]:
            for beta in np.linspace(-6, 6, 121):
                r = coord - ((np.round((coord - beta) / cell - alpha) + alpha) * cell + beta)
                e = float(np.mean(np.abs(r)))
                if e < best[0]:
                    best = (e, round(float(alpha), 3), round(float(beta), 3))
        out.append(best[1:])
    return out


def landmark_apply(coef, grid, rt, pts, sizes, snap: bool = True) -> np.ndarray:
    """The shipped function (box_convention.to_seed_boxes, float32) with these constants; trimmed per image."""
    from unittest import mock

    with mock.patch.object(spec, "BOX_DLIB_GRID_X", tuple(grid[0])), mock.patch.object(spec, "BOX_DLIB_GRID_Y", tuple(grid[1])):
        out = to_seed_boxes(rt.astype(np.float32), pts.astype(np.float32), None, coef=coef, snap=snap)
    return trim(out.astype(np.float64), sizes)


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


def evaluate(name, boxes, dl, src, test) -> dict:
    v = ious(boxes, dl)
    return {"held_out": summary(v[test]), "per_source_held_out": {s: summary(v[test & (src == s)]) for s in np.unique(src)}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--insightface-images", type=Path, help="insightface 2.1 wheel's insightface/data/images folder")
    ap.add_argument("--draws", type=int, default=200, help="augmented draws per single-face source")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pairs", type=Path, help="cache of the collected box pairs (JSON): written, or read with --refit")
    ap.add_argument("--refit", action="store_true", help="fit on the cached --pairs instead of collecting")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "box_mapping.json")
    a = ap.parse_args(argv)
    if a.refit:
        pairs = json.loads(a.pairs.read_text())
    else:
        srcs = sources(a.insightface_images, video_frames=12)
        draws = {"astronaut": (a.draws, (0.5, 1.6)), "video_frames": (a.draws, (0.8, 1.6)),
                 "t1_group": (max(a.draws // 3, 1), (0.5, 1.1)), "aligned_face": (a.draws, (1.2, 3.0))}
        pairs = collect(srcs, draws, a.seed)
        if a.pairs:
            a.pairs.write_text(json.dumps(pairs))
    src = np.array([p["source"] for p in pairs])
    draw = np.array([p["draw"] for p in pairs])
    dl, rt = np.array([p["dlib"] for p in pairs], float), np.array([p["retina"] for p in pairs], float)
    pts, sizes = np.array([p["landmarks"] for p in pairs], float), np.array([p["size"] for p in pairs], float)
    rng = np.random.default_rng(a.seed + 1)
    # split by draw (the faces of one image stay together), 30 % held out within each source
    test = np.zeros(len(pairs), bool)
    for s in np.unique(src):
        dr = np.unique(draw[src == s])
        held = rng.choice(dr, max(1, int(round(0.3 * len(dr)))), replace=False)
        test |= (src == s) & np.isin(draw, held)
    tr = ~test
    report = {"pairs": int(len(pairs)), "per_source": {s: int((src == s).sum()) for s in np.unique(src)},
              "train": int(tr.sum()), "held_out": int(test.sum()), "draws": a.draws, "seed": a.seed, "models": {}}
    report["models"]["raw retinaface"] = evaluate("raw", trim(rt, sizes), dl, src, test)
    c4 = box_only_fit(rt[tr], dl[tr])
    report["models"]["box only (4 constants)"] = evaluate("box", box_only_apply(c4, rt, sizes), dl, src, test)
    coef, grid = landmark_fit(rt[tr], pts[tr], dl[tr]), grid_fit(dl[tr])
    report["models"]["landmarks, continuous"] = evaluate("lc", landmark_apply(coef, grid, rt, pts, sizes, False), dl, src, test)
    report["models"]["landmarks + dlib grid (shipped)"] = m = evaluate("ls", landmark_apply(coef, grid, rt, pts, sizes), dl,
                                                                         src, test)
    loso = {}
    for s in np.unique(src):  # leave one source out: fit on the others, test on all of this one
        o = src != s
        c = landmark_fit(rt[o], pts[o], dl[o])
        loso[s] = summary(ious(landmark_apply(c, grid_fit(dl[o]), rt[~o], pts[~o], sizes[~o]), dl[~o]))
    m["leave_one_source_out"] = loso
    coef, grid = landmark_fit(rt, pts, dl), grid_fit(dl)  # the shipped constants: all pairs
    m["fit_on_all_pairs_in_sample"] = summary(ious(landmark_apply(coef, grid, rt, pts, sizes), dl))
    report["spec"] = {"BOX_SEED_COEF": [[round(float(v), 5) for v in row] for row in coef],
                      "BOX_DLIB_GRID_X": list(grid[0]), "BOX_DLIB_GRID_Y": list(grid[1])}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "models"}, indent=1))
    for label, m in report["models"].items():
        print(f"{label}: held-out {m['held_out']}")
        for s, v in m["per_source_held_out"].items():
            print("   ", s, v, "| leave-source-out", m.get("leave_one_source_out", {}).get(s, ""))
    return report


if __name__ == "__main__":
    main()
