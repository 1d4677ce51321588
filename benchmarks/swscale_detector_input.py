"""Issue 23 item 1, MEASURED ONLY: the detector's downscaled input made by FFmpeg's swscale (PyAV
`VideoFrame.reformat(width, height, format="bgr24", interpolation=AREA | BILINEAR)`, from the decoded YUV frame)
against today's input (`faces.detector_input`: Pillow's antialiased bilinear on the full BGR frame).

For each generated video (720p clip, 1080p large faces, 1080p two faces): time per frame of each way to make
the small frame (single thread, median), box IoU per frame of the chosen face(s) against today's (min / mean;
a face found by one way only counts IoU 0), and p_fake drift: the mean head over the frames' logits (crops
always cut from the same full-size frame, so only the detector input differs) with the given export's
classifier (`dfserve export --random-init --seed 0`: the seed-format checkpoint's weights). The default is NOT
switched (docs/cpu-speed.md says why).

    PYTHONPATH=. python benchmarks/swscale_detector_input.py --models DIR [--clip 720p.mp4] --out OUT.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ab_common import write  # noqa: E402  (benchmarks/, the script's own folder)

IOU_BAR, DRIFT_BAR = 0.98, 5e-3


def iou(a, b) -> float:
    ax1, ay1, ax2, ay2 = (float(v) for v in a[:4])
    bx1, by1, bx2, by2 = (float(v) for v in b[:4])
    iw, ih = max(0.0, min(ax2, bx2) - max(ax1, bx1)), max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def pil_small(full: np.ndarray, w: int, h: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(full)).resize((w, h), Image.BILINEAR))


_REFORMATTERS: dict = {}


def sws_small(frame, w: int, h: int, interp: str) -> np.ndarray:
    """One VideoReformatter kept per way (what a decode thread would keep): its swscale context is reused;
    `frame.reformat(...)` builds a new one per call (timed apart as `*_new_context`, same pixels)."""
    from av.video.reformatter import VideoReformatter

    r = _REFORMATTERS.setdefault(interp, VideoReformatter())
    return r.reformat(frame, width=w, height=h, format="bgr24", interpolation=interp).to_ndarray()


def measure(path: str, rt, mode: str, max_frames: int) -> dict:
    import av

    from dfserve.pipeline.aggregate import VideoAggregate
    from dfserve.pipeline.faces import classifier_input, crop_faces, detector_size, faces_per_frame

    ways = ("pil", "AREA", "BILINEAR")
    times = {k: [] for k in ways + ("AREA_new_context", "full_frame_bgr24")}
    boxes = {k: [] for k in ways}
    logits = {k: [] for k in ways}
    with av.open(path) as c:
        for n, fr in enumerate(c.decode(video=0)):
            if n >= max_frames:
                break
            t = time.perf_counter()
            full = fr.to_ndarray(format="bgr24")
            times["full_frame_bgr24"].append(time.perf_counter() - t)
            h, w, scale = detector_size(full.shape[0], full.shape[1])
            t = time.perf_counter()
            fresh = fr.reformat(width=w, height=h, format="bgr24", interpolation="AREA").to_ndarray()
            times["AREA_new_context"].append(time.perf_counter() - t)
            if n < 3:
                assert np.array_equal(fresh, sws_small(fr, w, h, "AREA")), "a reused context changed the pixels"
            for k in ways:
                t = time.perf_counter()
                small = pil_small(full, w, h) if k == "pil" else sws_small(fr, w, h, k)
                times[k].append(time.perf_counter() - t)
                x = np.ascontiguousarray(small[None].transpose(0, 3, 1, 2)).astype(np.float32)
                loc, sc, lm = rt.detect(x)
                faces = faces_per_frame(loc, sc, h, w, scale, mode=mode, landmarks=lm)[0]
                boxes[k].append([f.box for f in faces])
                if faces:
                    crops = crop_faces([full] * len(faces), [f.box for f in faces])
                    logits[k].append(rt.classify(classifier_input(crops)))
                else:
                    logits[k].append(None)
    out = {"frames": len(times["pil"]), "size": f"{full.shape[1]}x{full.shape[0]}", "detector_size": f"{w}x{h}",
           "ms_per_frame": {k: round(1e3 * statistics.median(v), 3) for k, v in times.items()}}
    ref_agg = VideoAggregate("mean")
    for z in logits["pil"]:
        if z is not None:
            ref_agg.add(z)
    ref_p = ref_agg.verdict().p_fake if ref_agg.count else None
    out["p_fake_pil"] = ref_p
    for k in ways[1:]:
        ious = []
        for a, b in zip(boxes["pil"], boxes[k]):
            if not a and not b:
                continue
            if len(a) != len(b):
                ious.append(0.0)
                continue
            # pair faces greedily by IoU (mode "all": several faces per frame)
            left = list(b)
            for bx in a:
                best = max(left, key=lambda o: iou(bx, o))
                ious.append(iou(bx, best))
                left.remove(best)
        agg = VideoAggregate("mean")
        frame_dp = []
        for za, zb in zip(logits["pil"], logits[k]):
            if zb is not None:
                agg.add(zb)
            if za is not None and zb is not None and len(za) == len(zb):
                pa = np.exp(za) / np.exp(za).sum(1, keepdims=True)
                pb = np.exp(zb) / np.exp(zb).sum(1, keepdims=True)
                frame_dp.append(float(np.abs(pa[:, 1] - pb[:, 1]).max()))
        p = agg.verdict().p_fake if agg.count else None
        out[k] = {"iou_min": round(min(ious), 4) if ious else None,
                  "iou_mean": round(statistics.fmean(ious), 4) if ious else None,
                  "faces_compared": len(ious),
                  "p_fake": p, "video_dp_fake": None if p is None or ref_p is None else abs(p - ref_p),
                  "frame_dp_fake_max": max(frame_dp) if frame_dp else None,
                  "speedup_vs_pil": round(statistics.median(times["pil"]) / statistics.median(times[k]), 1)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True, help="a `dfserve export` folder (its detector and fp32 classifier)")
    ap.add_argument("--clip", help="the 10-s 720p clip (else generated)")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--out")
    a = ap.parse_args()
    from dfserve import samples
    from dfserve.pipeline.runtimes.ort import OnnxRuntime

    rt = OnnxRuntime(a.models)
    d = Path(tempfile.mkdtemp(prefix="dfserve-sws-"))
    clip = a.clip or samples.make_face_video(d / "c720.mp4", width=1280, height=720, n_frames=300)["path"]
    vids = {
        "720p moving/zooming (10 s)": (clip, "largest", a.frames),
        "1080p large face": (samples.make_face_video(d / "big.mp4", n_frames=60, width=1920, height=1080, seed=3,
                                                     zoom=(1.6, 2.6))["path"], "largest", 60),
        "1080p two faces (--faces all)": (samples.make_multi_face_video(d / "two.mp4", [
            {"who": "astronaut", "scale": 2.0, "start": (60, 60), "end": (700, 120)},
            {"who": "cameraman", "scale": 2.4, "start": (1100, 200), "end": (800, 100)}],
            n_frames=60, width=1920, height=1080)["path"], "all", 60),
    }
    res = {"bars": {"iou_mean_min": IOU_BAR, "video_dp_fake_max": DRIFT_BAR}, "videos": {}}
    for name, (path, mode, n) in vids.items():
        res["videos"][name] = measure(str(path), rt, mode, n)
        print(name, json.dumps(res["videos"][name]), file=sys.stderr, flush=True)
    for k in ("AREA", "BILINEAR"):
        vs = [v[k] for v in res["videos"].values()]
        ok = all(v["iou_mean"] is not None and v["iou_mean"] >= IOU_BAR and v["video_dp_fake"] is not None
                 and v["video_dp_fake"] <= DRIFT_BAR for v in vs)
        res[f"{k}_passes_bars"] = ok
    write(res, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
