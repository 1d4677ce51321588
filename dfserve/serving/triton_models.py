"""Triton python-backend models. Each generated `model.py` is one line importing a class from here.

The classes only move tensors in and out; the work is done by the unit-tested functions in
`dfserve.pipeline`. `triton_python_backend_utils` exists only inside Triton's python stub, so
it is imported in `initialize`.
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from .. import spec
from ..errors import RequestLimitError
from ..spec import T
from .memory import RELEASER, ort_release

log = logging.getLogger("dfserve.serving")


def _pb():
    import triton_python_backend_utils as pb_utils  # provided by Triton's python backend stub

    return pb_utils


class BLSError(RuntimeError):
    pass


def bls_call(pb, model: str, inputs: Dict[str, np.ndarray], outputs: List[str]) -> Dict[str, np.ndarray]:
    """Call another model of this server and check its answer; errors name the failing model."""
    kw = {}
    if hasattr(pb, "PreferredMemory"):  # gpu flavor: ask for host outputs (the default is the producer's device)
        kw["preferred_memory"] = pb.PreferredMemory(pb.TRITONSERVER_MEMORY_CPU, 0)
    req = pb.InferenceRequest(model_name=model, inputs=[pb.Tensor(k, np.ascontiguousarray(v)) for k, v in inputs.items()],
                              requested_output_names=list(outputs), **kw)
    resp = req.exec()
    if resp.has_error():
        raise BLSError(f"model {model!r} failed: {resp.error().message()}")
    out = {}
    for name in outputs:
        t = pb.get_output_tensor_by_name(resp, name)
        if t is None:
            raise BLSError(f"model {model!r} returned no output {name!r}")
        out[name] = t.as_numpy() if t.is_cpu() else _gpu_to_numpy(t)
    return out


def _gpu_to_numpy(t) -> np.ndarray:
    """A python-backend tensor in GPU memory (as_numpy() refuses those) -> numpy, through DLPack."""
    import torch

    return torch.from_dlpack(t.to_dlpack()).cpu().numpy()


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
            self.device = torch.device("cuda", int(args.get("model_instance_device_id", 0)))
            torch.cuda.set_device(self.device)
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
                # FORCE_CPU_ONLY_INPUT_TENSORS=no: an input may still arrive in CPU memory (the python
                # backend does not promise GPU), so move it to this instance's GPU where it is not there
                v = self.torch.from_dlpack(x.to_dlpack())
                out[t.name] = v if not x.is_cpu() else v.to(self.device, non_blocking=True)
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
                if isinstance(exc, RequestLimitError):  # a refusal, not a fault: no traceback
                    log.warning("%s: request refused: %s", self.spec.name, exc)
                else:
                    log.exception("%s failed", self.spec.name)
                for n, _ in members:
                    responses[n] = self._error(exc)
        RELEASER.request_done()  # freed batch memory back to the OS soon after (memory.py)
        return responses

    def run(self, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def finalize(self):
        pass


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
            from ..pipeline.runtimes.torch_rt import frames_to_detector

            images, scale = frames_to_detector(x[T.FRAMES], self.max_side)
        else:
            from ..pipeline.faces import detector_input

            images, scale = detector_input(list(x[T.FRAMES]), self.max_side)
        return {T.IMAGES: images, T.SCALE: np.full((images.shape[0], 1), scale, np.float32)}


class NetworkModel(_Model):
    """A network as a python-backend model: the ONNX file of its version folder in onnxruntime / OpenVINO
    (cpu flavor), or the network in torch on this instance's GPU (gpu flavor: fp16, channels_last, CUDA
    graphs for the classifier; inputs and outputs stay on the GPU, passed by DLPack)."""

    network = ""  # "detector" | "classifier"

    def setup(self):
        if self.cuda:
            return self._setup_torch()
        from ..pipeline.runtimes.choice import make_network_session  # runtime + precision from the config

        threads = int(self.params.get("threads", "0")) or None
        self.out_names = [o.name for o in self.spec.outputs]
        self.sess = make_network_session(self.version_dir, self.spec is spec.FRAME_CLASSIFIER,
                                         self.params.get("runtime", spec.TRITON_CPU_RUNTIME), self.params.get("precision", "fp32"),
                                         threads, self.out_names, mem_pattern=not ort_release())
        if ort_release():
            RELEASER.add_idle_hook(self.sess.release)  # the arena shrinks once the model is idle (memory.py)

    def _setup_torch(self):
        from ..models import load_torch_runtime, model_id_from_metadata, read_metadata
        from .repo import SEED_CHECKPOINT

        if self.params.get("runtime", "torch") != "torch":
            raise ValueError(f"{self.spec.name}: runtime {self.params.get('runtime')!r} on the GPU; the python "
                             "model runs torch (TensorRT engines are the gpu-tensorrt flavor's tensorrt_plan models)")
        ckpt = self.version_dir / SEED_CHECKPOINT
        graphs = [b for b in (8, 16, 32, 64, 128, 256) if b <= self.spec.max_batch_size]
        self.rt = load_torch_runtime(self.version_dir, ckpt if ckpt.is_file() else None, str(self.device),
                                     model_id_from_metadata(read_metadata(self.version_dir, need_onnx=False)),
                                     fp16=self.params.get("precision", "fp16") == "fp16", networks=(self.network,),
                                     cuda_graph_batches=graphs)
        log.info("%s: torch on %s (%s)", self.spec.name, self.device, "fp16" if self.rt.fp16 else "fp32")

    def run(self, x):
        if self.cuda:
            return self.run_torch(x)
        return self.sess({k: x[k] for k in self.spec.input_names})

    def run_torch(self, x):
        raise NotImplementedError



class FaceDetector(NetworkModel):
    spec = spec.FACE_DETECTOR
    network = "detector"

    def run_torch(self, x):
        loc, scores, lm = self.rt.detect_tensor(x[T.IMAGES], landmarks=True)
        return {T.LOC: loc, T.SCORES: scores, T.LANDMARKS: lm}


class FrameClassifier(NetworkModel):
    spec = spec.FRAME_CLASSIFIER
    network = "classifier"

    def run_torch(self, x):
        return {T.LOGITS: self.rt.classify_tensor(x[T.FACES])}


class FaceCrop(_Model):
    spec = spec.FACE_CROP

    def setup(self):
        self.max_side = int(self.params.get("max_side", spec.DETECTOR_MAX_SIDE))
        self.threshold = float(self.params.get("score_threshold", spec.DETECTOR_SCORE_THRESHOLD))
        self.margin = float(self.params.get("margin", "0"))
        self.box = self.params.get("box", spec.DEFAULT_BOX)  # face box convention (seed: dlib's framing)

    def run(self, x):
        frames = x[T.FRAMES]
        if self.cuda:  # tensors on the GPU: detect stage and crops there, one host copy of the chosen boxes
            from ..pipeline.device_faces import faces_of_chunk

            faces, boxes, has = faces_of_chunk(frames, x[T.LOC], x[T.SCORES], self.max_side, self.threshold, self.box,
                                               self.margin, x[T.LANDMARKS])
            return {T.FACES: faces, T.BOXES: boxes, T.HAS_FACE: has.reshape(-1, 1)}
        from ..pipeline.faces import choose_faces, detector_size, faces_for_classifier

        if not (len(x[T.LOC]) == len(x[T.SCORES]) == len(x[T.LANDMARKS]) == len(frames)):
            raise ValueError(f"{len(frames)} frames but detections for {len(x[T.LOC])} / {len(x[T.SCORES])} / "
                             f"{len(x[T.LANDMARKS])}")
        h, w, scale = detector_size(frames.shape[1], frames.shape[2], self.max_side)
        loc, scores, lm = x[T.LOC], x[T.SCORES], x[T.LANDMARKS]
        if not (np.isfinite(loc).all() and np.isfinite(scores).all() and np.isfinite(lm).all()):
            raise ValueError("detector outputs contain NaN or infinity")
        chosen = choose_faces(loc, scores, h, w, scale, self.threshold, self.box, lm)
        faces, boxes, has = faces_for_classifier(list(frames), chosen, self.margin)
        return {T.FACES: faces, T.BOXES: boxes, T.HAS_FACE: has.reshape(-1, 1)}


def check_chunk(logits: np.ndarray, indices: np.ndarray):
    """A chunk sent to the aggregator: finite logits [n,2] and one frame index each (never silently wrong)."""
    logits = np.asarray(logits, np.float64).reshape(-1, spec.NUM_CLASSES) if np.size(logits) % spec.NUM_CLASSES == 0 \
        else None
    indices = np.asarray(indices).reshape(-1)
    if logits is None:
        raise ValueError(f"logits must have {spec.NUM_CLASSES} values per frame")
    if len(logits) != len(indices):
        raise ValueError(f"{len(logits)} frames of logits but {len(indices)} indices")
    if not np.isfinite(logits).all():
        raise ValueError("logits contain NaN or infinity")
    if len(indices) and indices.min() < 0:
        raise ValueError("frame indices must not be negative")
    return logits, indices


class VideoAggregator(_Model):
    """Stateful: one running aggregate per sequence (correlation id = video). START resets it, END
    returns the verdict and frees it; sequences idle longer than max_sequence_idle are dropped."""

    spec = spec.VIDEO_AGGREGATOR
    concat = False

    def setup(self):
        self.state = {}
        idle = self.config.get("sequence_batching", {}).get("max_sequence_idle_microseconds")
        self.idle_s = float(idle or spec.VIDEO_AGGREGATOR.sequence.max_idle_us) / 1e6

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
                head = x[T.HEAD].reshape(-1)[0]
                head = head.decode() if isinstance(head, bytes) else str(head)
                if flags & self.pb.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START or cid not in self.state:
                    self.state[cid] = (VideoAggregate(head), now)
                logits, indices = check_chunk(x[T.LOGITS], x[T.INDICES])
                agg = self.state[cid][0]
                agg.add(logits, indices)
                self.state[cid] = (agg, now)
                v = agg.verdict()
                if flags & self.pb.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END:
                    del self.state[cid]
                out.append(self._response({
                    T.P_FAKE: np.array([v.p_fake if v else np.nan], np.float32),
                    T.FRAMES_SCORED: np.array([agg.count], np.int64),
                    T.VERDICT_LOGITS: (v.logits if v else np.full(2, np.nan)).astype(np.float32)}))
            except Exception as exc:  # noqa: BLE001
                out.append(self._error(exc))
        RELEASER.request_done()  # freed batch memory back to the OS soon after (memory.py)
        return out


class DeepfakeVideo(_Model):
    """Encoded video bytes -> one score row (JSON).

    cpu flavor: decodes here (PyAV) and drives `deepfake_frames` / the networks through BLS. gpu flavor
    (`scorer` parameter "torch", instances on the GPU): the whole video runs in this instance as in `dfserve
    score --device cuda`, the same `TorchScorer` (NVDEC decode split over key-frame ranges, detector, NMS,
    crops and classifier on the device, frames never leave the GPU); measured on an H200, the BLS path spent
    its time copying decoded frames between models (benchmarks/results/*h200*/triton_gpu.md).

    Each request is held to the limits of this model's config parameters (`spec.REQUEST_LIMITS`, the one
    `RequestLimits` object every entry uses, resolved by `dfserve repo build`: upload bytes, checked first; frames
    decoded, pixels per frame, total decoded pixels, CPU seconds of this instance's process and wall seconds,
    checked on every decoded frame); over one, the request fails with a RequestLimitError naming the limit and
    the client's file name."""

    spec = spec.DEEPFAKE_VIDEO
    concat = False

    def setup(self):
        import av  # noqa: F401 - imported at load, so no request's CPU time pays for the imports
        import PIL.Image  # noqa: F401

        from ..pipeline import frames_scoring, options  # noqa: F401
        from ..pipeline.limits import RequestLimits

        info = self.version_dir / "model_info.json"
        self.model_id = json.loads(info.read_text())["model_id"] if info.is_file() else "unknown"
        self.limits = RequestLimits.from_params(self.params)
        log.info("deepfake_video: request limits %s", self.limits.to_params())
        self.rt = None
        if self.cuda and self.params.get("scorer") == "torch":
            self._setup_torch()

    def _setup_torch(self):
        from ..models import load_torch_runtime
        from ..pipeline.gpu_scorer import nvdec_available
        from .repo import SEED_CHECKPOINT

        ckpt = self.version_dir / SEED_CHECKPOINT
        self.rt = load_torch_runtime(self.version_dir, ckpt if ckpt.is_file() else None, str(self.device),
                                     self.model_id, fp16=self.params.get("precision", "fp16") == "fp16",
                                     cuda_graph_batches=(8, 16, 32, 64))
        self.nvdec = nvdec_available()
        log.info("deepfake_video: whole videos in this instance, torch on %s (%s), decoder %s", self.device,
                 "fp16" if self.rt.fp16 else "fp32", "nvdec" if self.nvdec else "pyav")

    def _score_in_process(self, path: str, name: str, opts) -> dict:
        """The gpu flavor: one video through this instance's TorchScorer, the row naming the client's file."""
        from ..errors import RequestLimitError
        from ..pipeline.gpu_scorer import TorchScorer
        from ..pipeline.results import public_row

        scorer = TorchScorer(self.rt, opts, model_id=self.model_id, use_nvdec=self.nvdec)
        scorer.limits = self.limits
        row = public_row(next(iter(scorer.score([path]))), path, name)
        err = row.get("error") or {}
        if err.get("type") == RequestLimitError.__name__:  # refused, as the cpu flavor refuses: not a row
            raise RequestLimitError(err.get("message", ""), err.get("limit"))
        return row

    def run(self, x):
        from ..pipeline.frames_scoring import FramesModels, score_video_frames
        from ..pipeline.options import REQUEST_FIELDS, ScoreOptions

        data = x[T.VIDEO].reshape(-1)[0]
        raw = x[T.OPTIONS].reshape(-1)[0]
        o = json.loads(raw.decode() if isinstance(raw, bytes) else raw or "{}") if raw else {}
        if not isinstance(o, dict):
            raise ValueError("options must be a JSON object")
        if o.pop("info", False):
            return {T.RESULT: np.array([json.dumps({"model_id": self.model_id}).encode()], dtype=np.object_)}
        name = str(o.pop("name", None) or "video")
        self.limits.check_upload(len(data), name)  # the encoded bytes, before they are written anywhere
        guard = self.limits.guard(name)  # this request's CPU and wall clocks start here
        opts = ScoreOptions.from_json(o, allowed=REQUEST_FIELDS)
        if self.rt is not None:  # gpu flavor: the whole video here (the upload check above, the rest per frame)
            suffix = Path(name).suffix or ".bin"
            with tempfile.NamedTemporaryFile(suffix=suffix) as f:
                f.write(data if isinstance(data, bytes) else bytes(data))
                f.flush()
                row = self._score_in_process(f.name, name, opts)
            return {T.RESULT: np.array([json.dumps(row).encode()], dtype=np.object_)}
        pb = self.pb

        def frames_fn(frames):
            r = bls_call(pb, spec.DEEPFAKE_FRAMES.name, {T.FRAMES: frames}, [T.BOXES, T.HAS_FACE, T.LOGITS])
            return r[T.BOXES], r[T.HAS_FACE].reshape(-1), r[T.LOGITS]

        def detect(images):
            r = bls_call(pb, spec.FACE_DETECTOR.name, {T.IMAGES: images}, [T.LOC, T.SCORES, T.LANDMARKS])
            return r[T.LOC], r[T.SCORES], r[T.LANDMARKS]

        def classify(faces):
            mb = spec.FRAME_CLASSIFIER.max_batch_size
            return np.concatenate([bls_call(pb, spec.FRAME_CLASSIFIER.name, {T.FACES: faces[i:i + mb]}, [T.LOGITS])[T.LOGITS]
                                   for i in range(0, len(faces), mb)]) if len(faces) else np.zeros((0, 2), np.float32)

        models = FramesModels(frames_fn=frames_fn, detect_fn=detect, classify_fn=classify)
        suffix = Path(name).suffix or ".bin"
        with tempfile.NamedTemporaryFile(suffix=suffix) as f:
            f.write(data if isinstance(data, bytes) else bytes(data))
            f.flush()
            row = score_video_frames(f.name, opts, models, self.model_id, display_path=name, guard=guard)
        return {T.RESULT: np.array([json.dumps(row).encode()], dtype=np.object_)}
