"""Issue 23 item 3, MEASURED ONLY: an int8 face detector (onnxruntime `quantize_static`, QDQ, per-channel,
calibrated on real-face frames of generated videos) against the detector `--precision int8` runs today (the fp32
ONNX compiled bf16 in OpenVINO), and against fp32: box IoU of the chosen face (min / mean; a face found by one
side only counts 0) on held-out clips, and detector frames/s at 640x360 (batch 8, OpenVINO, 2 threads).
NNCF is not installed here, so the tool is onnxruntime's (the classifier's int8 path, dfserve.export.precision).

    PYTHONPATH=. python benchmarks/int8_detector.py --models DIR [--clip 720p.mp4] --out OUT.json
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
sys.path.insert(0, str(ROOT / "benchmarks"))

IOU_BAR = 0.98


def frames_of(path: str, every: int, limit: int):
    import av

    out = []
    with av.open(path) as c:
        for n, fr in enumerate(c.decode(video=0)):
            if n % every == 0:
                out.append(fr.to_ndarray(format="bgr24"))
            if len(out) >= limit:
                break
    return out


def quantize(fp32: Path, calib: list, dst: Path) -> Path:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from dfserve import spec

    name = spec.FACE_DETECTOR.inputs[0].name

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: x} for x in calib])

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as td:
        pre = Path(td) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(dst), _Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    onnx.checker.check_model(str(dst))
    return dst


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True)
    ap.add_argument("--clip")
    ap.add_argument("--out")
    a = ap.parse_args()
    from swscale_detector_input import iou

    from dfserve import samples, spec
    from dfserve.pipeline.faces import detector_input, faces_per_frame
    from dfserve.pipeline.runtimes.openvino import compile_onnx

    d = Path(tempfile.mkdtemp(prefix="dfserve-int8det-"))
    # calibration: other seeds / zooms / sizes than the held-out clips, 1 frame per input
    cal_vids = [samples.make_face_video(d / f"cal{k}.mp4", n_frames=40, width=w, height=h, seed=10 + k, zoom=z)["path"]
                for k, (w, h, z) in enumerate([(1280, 720, (0.6, 1.2)), (1920, 1080, (1.2, 2.4)), (960, 540, (0.8, 1.6))])]
    cal_vids.append(samples.make_multi_face_video(d / "calm.mp4", [
        {"who": "astronaut", "scale": 1.0, "start": (40, 40), "end": (500, 80)},
        {"who": "cameraman", "scale": 1.3, "start": (700, 100), "end": (300, 60)}], n_frames=40, width=1280,
        height=720)["path"])
    calib = [detector_input([f])[0] for v in cal_vids for f in frames_of(str(v), 4, 10)]
    t = time.perf_counter()
    q = quantize(Path(a.models) / spec.DETECTOR_ONNX, calib, d / "face_detector.int8.onnx")
    quant_s = time.perf_counter() - t

    clip = a.clip or samples.make_face_video(d / "c720.mp4", width=1280, height=720, n_frames=300)["path"]
    held = {"720p clip (every 2nd of 300)": frames_of(str(clip), 2, 150),
            "1080p large face (60)": frames_of(str(samples.make_face_video(d / "big.mp4", n_frames=60, width=1920,
                                                                            height=1080, seed=3, zoom=(1.6, 2.6))["path"]), 1, 60)}
    nets = {"fp32": compile_onnx(Path(a.models) / spec.DETECTOR_ONNX, "fp32", 2, cache=False),
            "bf16 (today's --precision int8)": compile_onnx(Path(a.models) / spec.DETECTOR_ONNX, "bf16", 2, cache=False),
            "int8 QDQ": compile_onnx(q, "fp32", 2, cache=False)}
    reqs = {k: n.create_infer_request() for k, n in nets.items()}

    def det(k, x):
        r = reqs[k].infer([x])
        return r[nets[k].output(spec.FACE_DETECTOR.outputs[0].name)], r[nets[k].output(spec.FACE_DETECTOR.outputs[1].name)]

    res = {"calibration_inputs": len(calib), "quantize_s": round(quant_s, 1), "bar_iou_mean": IOU_BAR, "videos": {}}
    for name, frames in held.items():
        boxes = {k: [] for k in nets}
        for i in range(0, len(frames), 8):
            x, scale = detector_input(frames[i:i + 8])
            for k in nets:
                loc, sc = det(k, x)
                boxes[k] += faces_per_frame(loc, sc, x.shape[2], x.shape[3], scale, box=spec.BOX_RETINAFACE)
        row = {}
        for k in list(nets)[1:]:
            ious = []
            for ra, rb in zip(boxes["fp32"], boxes[k]):
                if not ra and not rb:
                    continue
                ious.append(iou(ra[0].box, rb[0].box) if ra and rb else 0.0)
            row[k] = {"iou_min_vs_fp32": round(min(ious), 4), "iou_mean_vs_fp32": round(statistics.fmean(ious), 4),
                      "frames": len(ious)}
        res["videos"][name] = row
        print(name, json.dumps(row), file=sys.stderr, flush=True)
    x, _ = detector_input(held["720p clip (every 2nd of 300)"][:8])
    speed = {k: [] for k in nets}
    for _ in range(5):  # interleaved
        for k in nets:
            det(k, x)
            t = time.perf_counter()
            for _ in range(3):
                det(k, x)
            speed[k].append(8 * 3 / (time.perf_counter() - t))
    res["detector_frames_per_s_640x360_b8"] = {k: round(statistics.median(v), 1) for k, v in speed.items()}
    res["int8_passes_iou_bar"] = all(v["int8 QDQ"]["iou_mean_vs_fp32"] >= IOU_BAR for v in res["videos"].values())
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
