"""Precision variants of the frame classifier (fp32, bf16, int8) and their measured drift against fp32.

- ``fp32``: `frame_classifier.onnx` itself (exact; what every runtime runs by default).
- ``bf16``: the same fp32 ONNX, compiled by OpenVINO with `INFERENCE_PRECISION_HINT=bf16` (no extra file:
  bf16 is a compile-time choice of the CPU plugin; it needs `--runtime openvino`).
- ``int8``: `frame_classifier.int8.onnx`, a QDQ ONNX made by post-training static quantization calibrated on
  real face crops (uint8 activations, int8 per-channel weights). One file runs in both runtimes: OpenVINO
  (int8 VNNI kernels) and onnxruntime. The tool is `onnxruntime.quantization.quantize_static`, chosen by
  measurement: NNCF 3.4's ONNX backend does not import with numpy<2 (which the Triton python backend
  needs), and NNCF on the OpenVINO model gives an IR that only OpenVINO runs, at the same speed in
  OpenVINO as this QDQ ONNX and with the same drift (README "Runtimes and precisions").
  `quantize_int8(method="nncf")` keeps that path for the comparison.

Each variant's drift against fp32 is measured on validation crops distinct from the calibration crops and
written into `metadata.json` under `precisions`: per-frame and per-video (mean head, 10 and 100 frames)
max/mean |dp_fake|, label agreement, and the cosine similarity of the 2048-d pooled features (the graph
is re-exported in memory with a `features` output). Seeded random weights are chaotic (a small input
change flips labels of frames near p=0.5), so the features' cosine similarity is the steadier signal.
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from .. import spec
from ..errors import ExportValidationError, ModelFilesError, UsageError
from ..pipeline.precisions import INT8_FILE, PRECISIONS, classifier_file  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

MIN_LABEL_AGREEMENT = 0.99
FEATURES_OUTPUT = "features"
VIDEO_LENGTHS = (10, 100)


def parse_precisions(text: str) -> list:
    """'fp32,bf16,int8' -> ['fp32', 'bf16', 'int8'] (any subset, any order, checked)."""
    out = []
    for p in (t.strip().lower() for t in str(text).split(",")):
        if not p:
            continue
        if p not in PRECISIONS:
            raise UsageError(f"--precision: {p!r} is not one of {', '.join(PRECISIONS)}")
        if p not in out:
            out.append(p)
    if not out:
        raise UsageError(f"--precision needs at least one of {', '.join(PRECISIONS)}")
    return out


# ------------------------------------------------------------------------------------ face crops
def default_crops(n: int, seed: int) -> np.ndarray:
    """Real face crops from scikit-image, uint8 BGR [n,112,112,3]: jittered astronaut crops and LFW faces.

    `seed` picks the jitter and which LFW faces (even seeds take even-indexed faces, odd seeds odd ones), so
    a calibration set (seed 0) and a validation set (seed 1) share no LFW image.
    """
    from skimage import data

    from ..samples import astronaut_face_crops, resize_bgr

    rng = np.random.default_rng(seed)
    lfw = data.lfw_subset()[:100]  # the first 100 are faces (25x25 grey, 0..1)
    lfw = lfw[seed % 2::2]
    n_lfw = min(len(lfw), n // 2)
    out = list(astronaut_face_crops(n - n_lfw, seed=100 + seed))
    for k in rng.permutation(len(lfw))[:n_lfw]:
        g = (np.clip(lfw[k], 0, 1) * 255).astype(np.uint8)
        img = np.stack([g, g, g], -1)
        if rng.random() < 0.5:
            img = img[:, ::-1]
        out.append(resize_bgr(img))
    return np.stack(out)


def crops_from_videos(videos: Sequence[str], models_dir: Path, per_video: int = 64) -> np.ndarray:
    """Face crops (uint8 BGR [N,112,112,3]) cut from VIDEOS by the pipeline's own detector and cropper."""
    from ..pipeline.decode import DecodeStats, find_videos, iter_frames, probe
    from ..pipeline.faces import crop_faces, locate_faces
    from ..pipeline.runtimes.ort import OnnxRuntime
    from ..pipeline.sampling import parse_policy

    files = find_videos(list(videos))
    if not files:
        raise UsageError(f"--calib: no video files in {' '.join(map(str, videos))}")
    rt = OnnxRuntime(models_dir)
    crops = []
    for v in files:
        info = probe(v, count_if_unknown=True)
        policy = parse_policy(f"uniform:{per_video}")
        for _idx, frames in iter_frames(v, policy, info, DecodeStats(), spec.DEFAULT_CHUNK):
            found = locate_faces(rt.detect, frames, spec.DETECTOR_MAX_SIDE, spec.DETECTOR_SCORE_THRESHOLD)
            keep = [(f, d.box) for f, d in zip(frames, found) if d is not None]
            if keep:
                crops.extend(crop_faces([f for f, _ in keep], [b for _, b in keep], 0.0))
    if len(crops) < 8:
        raise UsageError(f"--calib: only {len(crops)} face crops found in {len(files)} videos; need at least 8")
    return np.stack(crops)


def calib_and_validation(models_dir: Path, videos: Sequence[str] = (), n_default: int = 128):
    """(calibration, validation) normalised float32 crops; disjoint (alternate crops of the videos)."""
    from ..samples import normalize_faces

    if videos:
        crops = crops_from_videos(videos, models_dir)
        return normalize_faces(crops[0::2]), normalize_faces(crops[1::2]), "videos: " + ", ".join(map(str, videos))
    return (normalize_faces(default_crops(n_default, seed=0)), normalize_faces(default_crops(n_default, seed=1)),
            "scikit-image real faces: astronaut (jittered crops) + lfw_subset faces (disjoint halves)")


# ------------------------------------------------------------------------------- graph surgery
def with_features_output(model):
    """A copy of the classifier ModelProto with a second output `features` (the 2048-d pooled vector)."""
    import onnx
    from onnx import helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    flat = [n for n in m.graph.node if n.op_type == "Flatten"]
    pool = [n for n in m.graph.node if n.op_type == "GlobalAveragePool"]
    src = flat[-1].output[0] if flat else (pool[-1].output[0] if pool else None)
    if src is None:
        raise ExportValidationError("frame classifier graph has no GlobalAveragePool/Flatten: cannot find features")
    m.graph.node.append(helper.make_node("Identity", [src], [FEATURES_OUTPUT], name="features_identity"))
    m.graph.output.append(helper.make_tensor_value_info(FEATURES_OUTPUT, onnx.TensorProto.FLOAT,
                                                        ["batch", spec.FEATURE_DIM]))
    return m


def without_features_output(model):
    """Drop the `features` output (and its Identity) again: the variant keeps the spec's I/O."""
    keep = [o for o in model.graph.output if o.name != FEATURES_OUTPUT]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    nodes = [n for n in model.graph.node if FEATURES_OUTPUT not in n.output]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


# -------------------------------------------------------------------------------- quantization
def quantize_int8(fp32_onnx: Path, calib: np.ndarray, method: str = "onnxruntime", features: bool = True):
    """Post-training static int8 quantization of the classifier -> QDQ ModelProto (with `features` if asked)."""
    import onnx

    model = onnx.load(str(fp32_onnx))
    if features:
        model = with_features_output(model)
    name = spec.FRAME_CLASSIFIER.inputs[0].name
    if method == "nncf":
        # NNCF's ONNX backend does not import with numpy<2 (which the Triton python backend needs), so
        # NNCF quantizes the OpenVINO model converted from the ONNX; the result is an OpenVINO IR model.
        from .._lazy import require

        ov = require("openvino", extra="openvino")
        nncf = require("nncf", extra="openvino")
        with tempfile.TemporaryDirectory() as td:
            src = Path(td) / "m.onnx"
            onnx.save(model, str(src))
            ov_model = ov.convert_model(str(src))
        ds = nncf.Dataset([calib[i:i + 1] for i in range(calib.shape[0])])
        return nncf.quantize(ov_model, ds, subset_size=int(calib.shape[0]), preset=nncf.QuantizationPreset.PERFORMANCE)
    if method == "onnxruntime":
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        class _Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter([{name: calib[i:i + 1]} for i in range(calib.shape[0])])

            def get_next(self):
                return next(self.it, None)

        with tempfile.TemporaryDirectory() as td:
            src, pre, dst = Path(td) / "m.onnx", Path(td) / "pre.onnx", Path(td) / "q.onnx"
            onnx.save(model, str(src))
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(dst), _Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
            return onnx.load(str(dst))
    raise UsageError(f"int8 method must be nncf or onnxruntime, got {method!r}")


# ------------------------------------------------------------------------------------- running
class _Runner:
    """Runs a (features-output) classifier: logits [N,2] and features [N,2048] in batches."""

    def __init__(self, onnx_path: Path, runtime: str, precision: str, threads: Optional[int] = None):
        self.runtime = runtime
        if runtime == "openvino":
            from ..pipeline.runtimes.openvino import compile_onnx

            self.cm = compile_onnx(onnx_path, precision, threads, cache=False)
            self.req = self.cm.create_infer_request()
        else:
            from ..pipeline.runtimes.ort import ort_session

            self.sess = ort_session(onnx_path, threads or None)

    def __call__(self, x: np.ndarray, batch: int = 32):
        logits, feats = [], []
        for i in range(0, x.shape[0], batch):
            xb = np.ascontiguousarray(x[i:i + batch])
            if self.runtime == "openvino":
                r = self.req.infer([xb])
                logits.append(np.array(r[self.cm.output("logits")]))
                feats.append(np.array(r[self.cm.output(FEATURES_OUTPUT)]))
            else:
                lo, fe = self.sess.run([spec.T.LOGITS, FEATURES_OUTPUT], {spec.T.FACES: xb})
                logits.append(lo)
                feats.append(fe)
        return np.concatenate(logits).astype(np.float32), np.concatenate(feats).astype(np.float32)


def _p_fake(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e[..., spec.CLASS_FAKE] / e.sum(-1)


def drift(ref_logits, ref_feats, logits, feats, n_videos: int = 200, seed: int = 0) -> dict:
    """Drift of (logits, feats) against the fp32 reference: per frame and per video (mean head)."""
    p0, p1 = _p_fake(ref_logits), _p_fake(logits)
    d = np.abs(p1 - p0)
    lab = float(np.mean((p0 >= 0.5) == (p1 >= 0.5)))
    num = (ref_feats * feats).sum(1)
    den = np.linalg.norm(ref_feats, axis=1) * np.linalg.norm(feats, axis=1) + 1e-12
    cos = num / den
    out = {"frames": int(len(p0)),
           "per_frame": {"max_abs_dp_fake": float(d.max()), "mean_abs_dp_fake": float(d.mean()),
                         "label_agreement": lab, "max_abs_logit_diff": float(np.abs(logits - ref_logits).max())},
           "features_cosine": {"min": float(cos.min()), "mean": float(cos.mean())},
           "per_video": {}}
    rng = np.random.default_rng(seed)
    for n in VIDEO_LENGTHS:
        # videos of n crops drawn from the validation crops (with replacement when there are fewer than n)
        idx = [rng.choice(len(p0), size=n, replace=n > len(p0)) for _ in range(n_videos)]
        v0 = np.array([_p_fake(ref_logits[i].mean(0)) for i in idx])
        v1 = np.array([_p_fake(logits[i].mean(0)) for i in idx])
        dv = np.abs(v1 - v0)
        out["per_video"][f"mean@{n}"] = {"videos": n_videos, "max_abs_dp_fake": float(dv.max()),
                                         "mean_abs_dp_fake": float(dv.mean()),
                                         "label_agreement": float(np.mean((v0 >= 0.5) == (v1 >= 0.5)))}
    return out


# ----------------------------------------------------------------------------------- the export step
def export_precisions(models_dir, precisions: Sequence[str], calib_videos: Sequence[str] = (), force: bool = False,
                      method: str = "onnxruntime", threads: Optional[int] = None,
                      n_default: int = 128) -> Dict[str, dict]:
    """Write each requested precision variant into `models_dir` and its drift into metadata.json.

    Raises ExportValidationError for a variant whose per-frame label agreement on the validation crops is
    below 99 % unless `force` (then it is written, with `"forced": true` and the reason in the metadata).
    """
    import onnx

    models_dir = Path(models_dir)
    missing = [n for n in (spec.CLASSIFIER_ONNX, spec.METADATA_JSON) if not (models_dir / n).is_file()]
    if missing:
        raise ModelFilesError(f"{models_dir}: missing {', '.join(missing)}; export the models first")
    precisions = list(precisions)
    if method != "onnxruntime":
        raise UsageError("the int8 variant file is a QDQ ONNX made by onnxruntime.quantization (method='onnxruntime')")
    t0 = time.perf_counter()
    calib, val, source = calib_and_validation(models_dir, calib_videos, n_default)
    fp32_path = models_dir / spec.CLASSIFIER_ONNX
    report: Dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="dfserve-precision-") as td:
        feat_path = Path(td) / "fp32_features.onnx"
        onnx.save(with_features_output(onnx.load(str(fp32_path))), str(feat_path))
        ref_logits, ref_feats = _Runner(feat_path, "onnxruntime", "fp32", threads)(val)
        have_ov = _has_openvino()
        for p in precisions:
            entry: dict = {"file": classifier_file(models_dir, p).name}
            if p == "fp32":
                entry.update(runtimes=["onnxruntime", "openvino"] if have_ov else ["onnxruntime"], exact=True)
                if have_ov:
                    entry["drift"] = {"openvino": drift(ref_logits, ref_feats, *_Runner(feat_path, "openvino", "fp32",
                                                                                         threads)(val))}
                    # fp32 must stay exact in every runtime (--runtime auto relies on it): p_fake within 1e-4
                    entry["exact"] = entry["drift"]["openvino"]["per_frame"]["max_abs_dp_fake"] <= spec.TOL_VERDICT_PROB
                    if not entry["exact"]:
                        log.warning("OpenVINO fp32 differs from onnxruntime by more than %g in p_fake: use "
                                    "--runtime onnxruntime for exact fp32", spec.TOL_VERDICT_PROB)
            elif p == "bf16":
                if not have_ov:
                    raise UsageError("--precision bf16 runs in OpenVINO: pip install 'dfserve[openvino]'")
                entry.update(runtimes=["openvino"], how="OpenVINO INFERENCE_PRECISION_HINT=bf16 on the fp32 ONNX",
                             drift={"openvino": drift(ref_logits, ref_feats,
                                                      *_Runner(feat_path, "openvino", "bf16", threads)(val))})
            else:
                tq = time.perf_counter()
                q = quantize_int8(fp32_path, calib, method=method)
                qf = Path(td) / "int8_features.onnx"
                onnx.save(q, str(qf))
                entry.update(runtimes=["onnxruntime", "openvino"] if have_ov else ["onnxruntime"],
                             how=f"post-training static quantization ({method}), QDQ, calibrated on "
                                 f"{calib.shape[0]} crops", quantize_s=round(time.perf_counter() - tq, 1),
                             drift={"onnxruntime": drift(ref_logits, ref_feats,
                                                         *_Runner(qf, "onnxruntime", "int8", threads)(val))})
                if have_ov:
                    entry["drift"]["openvino"] = drift(ref_logits, ref_feats, *_Runner(qf, "openvino", "int8",
                                                                                       threads)(val))
                entry["_model"] = without_features_output(q)
            worst = min(d["per_frame"]["label_agreement"] for d in entry.get("drift", {}).values()) \
                if entry.get("drift") else 1.0
            entry["label_agreement"] = worst
            if p != "fp32" and worst < MIN_LABEL_AGREEMENT:
                why = (f"--precision {p}: per-frame label agreement with fp32 on {val.shape[0]} validation crops is "
                       f"{worst:.1%}, below {MIN_LABEL_AGREEMENT:.0%}")
                if not force:
                    raise ExportValidationError(why + "; not written (pass --force to write it anyway)")
                log.warning("%s; written anyway (--force)", why)
                entry.update(forced=True, refused_because=why)
            report[p] = entry
        for p, entry in report.items():
            q = entry.pop("_model", None)
            if q is not None:
                onnx.save(q, str(models_dir / INT8_FILE))
                from .checkpoint import sha256_file

                entry["sha256"] = sha256_file(models_dir / INT8_FILE)
    meta = json.loads((models_dir / spec.METADATA_JSON).read_text())
    meta.setdefault("precisions", {}).update(report)
    meta["precision_validation"] = {
        "crops": source, "calibration_crops": int(calib.shape[0]), "validation_crops": int(val.shape[0]),
        "min_label_agreement": MIN_LABEL_AGREEMENT, "reference": "onnxruntime fp32",
        "note": ("drift measured on the exported weights; with seeded random (UNTRAINED) weights labels of frames "
                 "near p=0.5 flip easily, so judge them by the features' cosine similarity"
                 if meta.get("weights", {}).get("untrained") else "drift measured on the exported weights"),
        "seconds": round(time.perf_counter() - t0, 1)}
    (models_dir / spec.METADATA_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    return report


def _has_openvino() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True
