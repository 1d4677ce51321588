"""Triton python-backend models. Each generated `model.py` is one line importing a class from here.

The classes only move tensors in and out; the work is done by the unit-tested functions in
`dfserve.pipeline`. `triton_python_backend_utils` exists only inside Triton's python stub, so
it is imported in `initialize`.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from .. import spec

log = logging.getLogger("dfserve.serving")


def _pb():
    import triton_python_backend_utils as pb_utils  # provided by Triton's python backend stub

    return pb_utils


class BLSError(RuntimeError):
    pass


def bls_call(pb, model: str, inputs: Dict[str, np.ndarray], outputs: List[str]) -> Dict[str, np.ndarray]:
    """Call another model of this server and check its answer; errors name the failing model."""
    req = pb.InferenceRequest(model_name=model, inputs=[pb.Tensor(k, np.ascontiguousarray(v)) for k, v in inputs.items()],
                              requested_output_names=list(outputs))
    resp = req.exec()
    if resp.has_error():
        raise BLSError(f"model {model!r} failed: {resp.error().message()}")
    out = {}
    for name in outputs:
        t = pb.get_output_tensor_by_name(resp, name)
        if t is None:
            raise BLSError(f"model {model!r} returned no output {name!r}")
        out[name] = t.as_numpy()
    return out


class _Model:
    """Base: per-request error handling; same-shape requests concatenated into one batch."""

    spec: spec.ModelSpec
    concat = True

    def initialize(self, args):
        self.pb = _pb()
        self.config = json.loads(args["model_config"])
        self.params = {k: v.get("string_value", "") for k, v in self.config.get("parameters", {}).items()}
        self.version_dir = Path(args["model_repository"]) / args["model_version"]
        # gpu flavor: inputs arrive as GPU tensors and are handed to torch through DLPack, no host copies
        self.cuda = self.params.get("device", "cpu").startswith("cuda")
        if self.cuda:
            import torch

            self.torch = torch
            torch.cuda.set_device(int(args.get("model_instance_device_id", 0)))
        self.setup()

    def setup(self):
        pass

    def _inputs(self, req) -> Dict[str, np.ndarray]:
        out = {}
        for t in self.spec.inputs:
            x = self.pb.get_input_tensor_by_name(req, t.name)
            if x is None:
                raise ValueError(f"missing input {t.name!r}")
            if self.cuda and t.dtype != "bytes":
                out[t.name] = self.torch.from_dlpack(x.to_dlpack())
            else:
                out[t.name] = x.as_numpy()
        return out

    def _error(self, exc: BaseException):
        return self.pb.InferenceResponse(output_tensors=[], error=self.pb.TritonError(
            f"{self.spec.name}: {type(exc).__name__}: {exc}"))

    def _tensor(self, name, v):
        if isinstance(v, np.ndarray):
            return self.pb.Tensor(name, np.ascontiguousarray(v))
        return self.pb.Tensor.from_dlpack(name, self.torch.utils.dlpack.to_dlpack(v.contiguous()))

    def _response(self, arrays: Dict[str, np.ndarray]):
        return self.pb.InferenceResponse(output_tensors=[self._tensor(k, v) for k, v in arrays.items()])

    def execute(self, requests):
        responses = [None] * len(requests)
        groups: Dict[tuple, list] = {}
        for n, req in enumerate(requests):
            try:
                ins = self._inputs(req)
            except Exception as exc:  # noqa: BLE001
                responses[n] = self._error(exc)
                continue
            key = tuple((k, v.shape[1:]) for k, v in ins.items()) if self.concat else (n,)
            groups.setdefault(key, []).append((n, ins))
        for members in groups.values():
            try:
                if len(members) == 1:
                    outs = [self.run(members[0][1])]
                else:
                    sizes = [m[1][self.spec.inputs[0].name].shape[0] for m in members]
                    merged = {k: _cat([m[1][k] for m in members]) for k in members[0][1]}
                    res = self.run(merged)
                    cuts = [int(c) for c in np.cumsum(sizes)[:-1]]
                    outs = [dict(zip(res, parts)) for parts in zip(*(_split(v, cuts) for v in res.values()))]
                for (n, _), o in zip(members, outs):
                    responses[n] = self._response(o)
            except Exception as exc:  # noqa: BLE001 - the failing requests get the error, the server stays up
                log.exception("%s failed", self.spec.name)
                for n, _ in members:
                    responses[n] = self._error(exc)
        return responses

    def run(self, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def finalize(self):
        pass


def _ort_session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _cat(parts):
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    import torch

    return torch.cat(parts)


def _split(v, cuts):
    if isinstance(v, np.ndarray):
        return np.split(v, cuts)
    bounds = [0, *cuts, v.shape[0]]
    return [v[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


class FacePrep(_Model):
    spec = spec.FACE_PREP

    def setup(self):
        self.max_side = int(self.params.get("max_side", spec.DETECTOR_MAX_SIDE))

    def run(self, x):
        if self.cuda:
            from ..pipeline.torch_runtime import frames_to_detector

            images, scale = frames_to_detector(x["frames"], self.max_side)
        else:
            from ..pipeline.faces import detector_input

            images, scale = detector_input(list(x["frames"]), self.max_side)
        return {"images": images, "scale": np.full((images.shape[0], 1), scale, np.float32)}


class OnnxModel(_Model):
    """A python-backend model that runs the ONNX file of its version folder in onnxruntime (cpu flavor)."""

    def setup(self):
        from ..pipeline.runtime_choice import make_network_session  # issue 11: runtime + precision from config

        threads = int(self.params.get("threads", "0")) or (os.cpu_count() or 1)
        self.out_names = [o.name for o in self.spec.outputs]
        self.sess = make_network_session(self.version_dir, self.spec is spec.FRAME_CLASSIFIER,
                                         self.params.get("runtime", "auto"), self.params.get("precision", "fp32"),
                                         threads, self.out_names)

    def run(self, x):
        return self.sess({k: x[k] for k in self.spec.input_names})


class FaceDetector(OnnxModel):
    spec = spec.FACE_DETECTOR


class FrameClassifier(OnnxModel):
    spec = spec.FRAME_CLASSIFIER


class FaceCrop(_Model):
    spec = spec.FACE_CROP

    def setup(self):
        self.max_side = int(self.params.get("max_side", spec.DETECTOR_MAX_SIDE))
        self.threshold = float(self.params.get("score_threshold", spec.DETECTOR_SCORE_THRESHOLD))
        self.margin = float(self.params.get("margin", "0"))

    def run(self, x):
        from ..pipeline.faces import choose_faces, detector_size, faces_for_classifier

        frames = x["frames"]
        h, w, scale = detector_size(frames.shape[1], frames.shape[2], self.max_side)
        loc, scores = x["loc"], x["scores"]
        if self.cuda:  # detections are small: NMS on the host, pixels stay on the GPU
            loc, scores = loc.float().cpu().numpy(), scores.float().cpu().numpy()
        chosen = choose_faces(loc, scores, h, w, scale, self.threshold)
        if self.cuda:
            from ..pipeline.torch_runtime import crop_resize

            boxes_l = [c.box if c is not None else None for c in chosen]
            faces = crop_resize(frames, boxes_l, self.margin)
            boxes = np.stack([b if b is not None else np.zeros(4, np.float32) for b in boxes_l]).astype(np.float32)
            has = np.array([b is not None for b in boxes_l])
        else:
            faces, boxes, has = faces_for_classifier(list(frames), chosen, self.margin)
        return {"faces": faces, "boxes": boxes, "has_face": has.reshape(-1, 1)}


class VideoAggregator(_Model):
    """Stateful: one running aggregate per sequence (correlation id = video). START resets it, END
    returns the verdict and frees it; sequences idle longer than max_sequence_idle are dropped."""

    spec = spec.VIDEO_AGGREGATOR
    concat = False

    def setup(self):
        self.state = {}
        idle = self.config.get("sequence_batching", {}).get("max_sequence_idle_microseconds")
        self.idle_s = float(idle or spec.VIDEO_AGGREGATOR.extra["max_sequence_idle_us"]) / 1e6

    def execute(self, requests):
        from ..pipeline.aggregate import VideoAggregate

        now = time.monotonic()
        for cid in [c for c, (_, seen) in self.state.items() if now - seen > self.idle_s]:
            log.warning("video_aggregator: sequence %s idle for more than %.0f s, dropped", cid, self.idle_s)
            del self.state[cid]
        out = []
        for req in requests:
            try:
                x = self._inputs(req)
                cid = req.correlation_id()
                flags = req.flags()
                head = x["head"].reshape(-1)[0]
                head = head.decode() if isinstance(head, bytes) else str(head)
                if flags & self.pb.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START or cid not in self.state:
                    self.state[cid] = (VideoAggregate(head), now)
                agg = self.state[cid][0]
                agg.add(x["logits"].reshape(-1, spec.NUM_CLASSES), x["indices"].reshape(-1))
                self.state[cid] = (agg, now)
                v = agg.verdict()
                if flags & self.pb.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END:
                    del self.state[cid]
                out.append(self._response({
                    "p_fake": np.array([v.p_fake if v else np.nan], np.float32),
                    "frames_scored": np.array([agg.count], np.int64),
                    "verdict_logits": (v.logits if v else np.full(2, np.nan)).astype(np.float32)}))
            except Exception as exc:  # noqa: BLE001
                out.append(self._error(exc))
        return out


class DeepfakeVideo(_Model):
    """Encoded video bytes -> one score row (JSON). Decodes here, drives `deepfake_frames` through BLS."""

    spec = spec.DEEPFAKE_VIDEO
    concat = False

    def setup(self):
        info = self.version_dir / "model_info.json"
        self.model_id = json.loads(info.read_text())["model_id"] if info.is_file() else "unknown"

    def run(self, x):
        from ..pipeline.engine import ScoreOptions
        from ..pipeline.frames_scoring import precropped_frames_fn, score_video_frames
        from ..pipeline.sampling import parse_policy

        data = x["video"].reshape(-1)[0]
        raw = x["options"].reshape(-1)[0]
        o = json.loads(raw.decode() if isinstance(raw, bytes) else raw or "{}") if raw else {}
        if o.get("info"):
            return {"result": np.array([json.dumps({"model_id": self.model_id}).encode()], dtype=np.object_)}
        name = str(o.get("name") or "video")
        opts = ScoreOptions(sample=parse_policy(o.get("sample", "all")), head=o.get("head", spec.DEFAULT_HEAD),
                            faces=o.get("faces", "detect"), no_face=o.get("no_face", "skip"),
                            timeline=bool(o.get("timeline", False)), chunk=int(o.get("chunk", 16))).validate()
        pb = self.pb

        def frames_fn(frames):
            r = bls_call(pb, "deepfake_frames", {"frames": frames}, ["boxes", "has_face", "logits"])
            return r["boxes"], r["has_face"].reshape(-1), r["logits"]

        def classify(faces):
            return bls_call(pb, "frame_classifier", {"faces": faces}, ["logits"])["logits"]

        fn = precropped_frames_fn(classify) if opts.faces == "precropped" else frames_fn
        suffix = Path(name).suffix or ".bin"
        with tempfile.NamedTemporaryFile(suffix=suffix) as f:
            f.write(data if isinstance(data, bytes) else bytes(data))
            f.flush()
            row = score_video_frames(f.name, opts, fn, self.model_id, display_path=name)
        return {"result": np.array([json.dumps(row).encode()], dtype=np.object_)}
