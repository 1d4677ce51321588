"""gRPC client of a dfserve Triton server: numpy + tritonclient only (never torch).

    from dfserve.client import DeepfakeClient
    with DeepfakeClient("127.0.0.1:8001") as c:
        c.wait_ready()
        row = c.score_video("clip.mp4")                  # the server decodes it (deepfake_video)
        verdict = c.score_frames(chunks, head="mean")    # stream decoded frames under one sequence id

Timeouts are explicit; UNAVAILABLE is retried with exponential backoff, nothing else is. Errors
are ServerError and say which model failed and why. Frames travel through system shared memory
when the server is on this host (loopback), so large frame batches never hit gRPC message limits.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Tuple, Union

import numpy as np

from .. import spec
from ..spec import T
from .._lazy import require
from ..errors import RequestLimitError, ServerError, VideoError

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
_NP = {"uint8": np.uint8, "float32": np.float32, "int64": np.int64, "bool": np.bool_, "bytes": np.object_}
_TRITON = {"uint8": "UINT8", "float32": "FP32", "int64": "INT64", "bool": "BOOL", "bytes": "BYTES"}


# Shared-memory regions this process created and has not released yet: released at exit too, so a
# client that is never closed (an abandoned generator, a daemon thread) does not leak /dev/shm.
_LIVE_REGIONS: dict = {}


def _release_region(name: str) -> None:
    entry = _LIVE_REGIONS.pop(name, None)
    if entry is None:
        return
    handle, cuda = entry
    try:
        _shm_module(cuda).destroy_shared_memory_region(handle)
    except Exception:  # noqa: BLE001 - already gone
        pass
    if not cuda:
        try:
            os.unlink(f"/dev/shm/{name}")
        except OSError:
            pass


@atexit.register
def _release_all_regions() -> None:
    for name in list(_LIVE_REGIONS):
        _release_region(name)


def _host(a):
    """numpy view of a host array or a (torch) device tensor."""
    return a if isinstance(a, np.ndarray) else a.cpu().numpy()


MAX_VIDEO_BYTES = 1 << 30  # score_video sends at most this much (a gRPC message is at most 2 GiB)


def read_video_file(path: Union[str, Path], max_bytes: int = MAX_VIDEO_BYTES) -> bytes:
    """The bytes of a regular video file, or a VideoError naming it: never a FIFO (it would block), a device
    (/dev/zero would be read until memory runs out), a folder or a symlink loop, never more than max_bytes."""
    import stat

    try:
        st = os.stat(path)  # follows symlinks: what matters is what would be read
    except OSError as exc:
        raise VideoError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a pipe (FIFO)" if stat.S_ISFIFO(st.st_mode)
                else "a device" if (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) else "not a regular file")
        raise VideoError(f"{path}: is {kind}, not a video file")
    if st.st_size > max_bytes:
        raise VideoError(f"{path}: {st.st_size} bytes is more than the client sends ({max_bytes}); score it "
                         "with `dfserve score --server` (frames are streamed) or raise max_video_bytes")
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise VideoError(f"{path}: grew past {max_bytes} bytes while being read")
    return data


@dataclass
class FramesResult:
    boxes: np.ndarray  # [B,4] x1,y1,x2,y2 (zeros where no face)
    has_face: np.ndarray  # [B] bool
    logits: np.ndarray  # [B,2]


def _shm_module(cuda: bool = False):
    import warnings

    with warnings.catch_warnings():  # tritonclient 2.51 imports the deprecated pkg_resources here
        warnings.simplefilter("ignore")
        if cuda:
            return require("tritonclient.utils.cuda_shared_memory", "tritonclient[cuda]", "gpu")
        import tritonclient.utils.shared_memory as shm
    return shm


def _grpc():
    return require("tritonclient.grpc", "tritonclient[grpc]", "client")


class DeepfakeClient:
    def __init__(self, url: str = "127.0.0.1:8001", timeout: float = 120.0, retries: int = 4,
                 backoff: float = 0.25, shared_memory: Union[bool, str] = "auto",
                 max_video_bytes: int = MAX_VIDEO_BYTES):
        grpc = _grpc()
        self.max_video_bytes = max_video_bytes
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._c = grpc.InferenceServerClient(url=url)
        host = url.rsplit(":", 1)[0]
        # "auto": system shared memory when the server is on this host; "cuda": CUDA IPC (server on
        # this host and GPU, frames already on the GPU); False: plain gRPC messages.
        self.shm_kind = "cuda" if shared_memory == "cuda" else "system"
        self.use_shm = (host in LOCAL_HOSTS) if shared_memory == "auto" else bool(shared_memory)
        self.gpu_id = 0
        self._shm = None  # (name, handle, size)
        self._lock = threading.Lock()

    # -------------------------------------------------------------------------------- plumbing
    def _call(self, what: str, fn, *args, **kw):
        from tritonclient.utils import InferenceServerException

        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return fn(*args, **kw)
            except InferenceServerException as exc:
                status = (exc.status() or "")
                if "UNAVAILABLE" in status and attempt < self.retries:
                    log.warning("%s: server unavailable (%s); retrying in %.2f s", what, exc.message(), delay)
                    time.sleep(delay)
                    delay *= 2
                    continue
                raise ServerError(f"{what} failed on {self.url}: [{status or 'error'}] {exc.message()}") from exc

    def _inputs(self, model: spec.ModelSpec, arrays: dict, shm: bool = False):
        grpc = _grpc()
        ins = []
        for t in model.inputs:
            a = arrays[t.name]
            i = grpc.InferInput(t.name, list(a.shape), _TRITON[t.dtype])
            nbytes = a.nbytes if isinstance(a, np.ndarray) else a.numel() * a.element_size()
            if shm and t.dtype == "uint8" and nbytes > (1 << 20):
                self._to_shm(i, a, nbytes)
            else:
                i.set_data_from_numpy(_host(a))  # a small CUDA tensor goes by value
            ins.append(i)
        return ins

    def _to_shm(self, inp, a, size: int) -> None:
        cuda = self.shm_kind == "cuda"
        shm = _shm_module(cuda)
        if self._shm is None or self._shm[2] < size:
            self._close_shm()
            name = f"dfserve-{os.getpid()}-{uuid.uuid4().hex[:12]}"
            if cuda:
                handle = shm.create_shared_memory_region(name, size, self.gpu_id)
                self._call("register CUDA shared memory", self._c.register_cuda_shared_memory, name,
                           shm.get_raw_handle(handle), self.gpu_id, size)
            else:
                handle = shm.create_shared_memory_region(name, f"/{name}", size)
                self._call("register system shared memory", self._c.register_system_shared_memory, name,
                           f"/{name}", size)
            self._shm = (name, handle, size)
            _LIVE_REGIONS[name] = (handle, cuda)
        if isinstance(a, np.ndarray):
            shm.set_shared_memory_region(self._shm[1], [np.ascontiguousarray(a)])
        else:  # a torch CUDA tensor (NVDEC frames): device-to-device copy
            shm.set_shared_memory_region_from_dlpack(self._shm[1], [a.contiguous()])
        inp.set_shared_memory(self._shm[0], size)

    def _close_shm(self) -> None:
        if self._shm is None:
            return
        name = self._shm[0]
        self._shm = None
        try:
            if self.shm_kind == "cuda":
                self._c.unregister_cuda_shared_memory(name)
            else:
                self._c.unregister_system_shared_memory(name)
        except Exception:  # noqa: BLE001 - the server may be gone already
            log.debug("could not unregister shared memory %s", name)
        _release_region(name)

    def _infer(self, model: spec.ModelSpec, arrays: dict, shm: bool = False, **kw):
        ins = self._inputs(model, arrays, shm)
        outs = [_grpc().InferRequestedOutput(t.name) for t in model.outputs]
        res = self._call(f"model {model.name!r}", self._c.infer, model.name, ins, outputs=outs,
                         client_timeout=self.timeout, **kw)
        return {t.name: res.as_numpy(t.name) for t in model.outputs}

    # ----------------------------------------------------------------------------------- health
    def is_live(self) -> bool:
        try:
            return bool(self._c.is_server_live(client_timeout=5))
        except Exception:  # noqa: BLE001
            return False

    def is_ready(self) -> bool:
        try:
            return bool(self._c.is_server_ready(client_timeout=5)) and all(
                self._c.is_model_ready(m.name, client_timeout=5) for m in spec.ALL_MODELS)
        except Exception:  # noqa: BLE001
            return False

    def health(self) -> dict:
        models = {}
        for m in spec.ALL_MODELS:
            try:
                models[m.name] = bool(self._c.is_model_ready(m.name, client_timeout=5))
            except Exception:  # noqa: BLE001
                models[m.name] = False
        return {"url": self.url, "live": self.is_live(), "ready": all(models.values()) and self.is_live(),
                "models": models}

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_ready():
                return
            time.sleep(0.25)
        raise ServerError(f"server {self.url} not ready after {timeout:.0f} s: {self.health()}")

    # -------------------------------------------------------------------------------- inference
    def infer_frames(self, frames: np.ndarray) -> FramesResult:
        """uint8 BGR frames [B,H,W,3] through the `deepfake_frames` ensemble."""
        if isinstance(frames, np.ndarray) or not self.use_shm or self.shm_kind != "cuda":
            frames = np.ascontiguousarray(_host(frames), dtype=np.uint8)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 [B,H,W,3] BGR, got shape {frames.shape}")
        out = []
        mb = spec.DEEPFAKE_FRAMES.max_batch_size
        for i in range(0, frames.shape[0], mb):
            with self._lock:
                out.append(self._infer(spec.DEEPFAKE_FRAMES, {T.FRAMES: frames[i:i + mb]}, shm=self.use_shm))
        return FramesResult(np.concatenate([o[T.BOXES] for o in out]),
                            np.concatenate([o[T.HAS_FACE] for o in out]).reshape(-1),
                            np.concatenate([o[T.LOGITS] for o in out]))

    def classify_faces(self, faces: np.ndarray) -> np.ndarray:
        """float32 [B,3,112,112] normalised faces -> logits [B,2] (`frame_classifier`)."""
        mb = spec.FRAME_CLASSIFIER.max_batch_size
        faces = np.ascontiguousarray(faces, dtype=np.float32)
        return np.concatenate([self._infer(spec.FRAME_CLASSIFIER, {T.FACES: faces[i:i + mb]})[T.LOGITS]
                               for i in range(0, faces.shape[0], mb)])

    def aggregate(self, sequence_id: int, logits: np.ndarray, indices: Sequence[int], head: str = spec.DEFAULT_HEAD,
                  start: bool = False, end: bool = False) -> dict:
        """Add one chunk of per-frame logits to the server-side aggregate of a video (`video_aggregator`)."""
        arrays = {T.LOGITS: np.asarray(logits, np.float32).reshape(1, -1, spec.NUM_CLASSES),
                  T.INDICES: np.asarray(indices, np.int64).reshape(1, -1),
                  T.HEAD: np.array([[head.encode()]], dtype=np.object_)}
        r = self._infer(spec.VIDEO_AGGREGATOR, arrays, sequence_id=sequence_id, sequence_start=start,
                        sequence_end=end)
        p = float(r[T.P_FAKE].reshape(-1)[0])
        return {"p_fake": None if np.isnan(p) else p, "frames_scored": int(r[T.FRAMES_SCORED].reshape(-1)[0]),
                "verdict_logits": r[T.VERDICT_LOGITS].reshape(-1)}

    def score_frames(self, chunks: Iterable[Tuple[Sequence[int], np.ndarray]], head: str = spec.DEFAULT_HEAD,
                     no_face: str = "skip", sequence_id: Optional[int] = None, timeline: bool = False) -> dict:
        """Stream chunks (frame indices, uint8 frames [B,H,W,3] or a list of [H,W,3]) of ONE video under one
        sequence id; a chunk may change frame size mid-stream (it is split by size).

        Returns {"p_fake", "label", "confidence", "frames_scored", "frames_with_face", "frames"} (+ "timeline").
        """
        from ..pipeline.chunk import VideoTally, records_from_outputs, score_chunk

        tally = VideoTally(head, no_face, timeline, sink=RemoteAggregate(self, head, sequence_id))

        def stage(indices, frames):
            r = self.infer_frames(np.stack(frames) if isinstance(frames, (list, tuple)) else frames)
            return records_from_outputs(indices, r.boxes, r.has_face, r.logits)

        for idx, frames in chunks:
            score_chunk(idx, frames, stage, tally)
        verdict, n = tally.finish()
        out = {"p_fake": verdict.p_fake if verdict else None, "label": verdict.label if verdict else None,
               "confidence": verdict.confidence if verdict else None, "frames_scored": n,
               "frames_with_face": tally.frames_with_face, "frames": tally.frames_sampled}
        if timeline:
            out["timeline"] = tally.sorted_timeline()
        return out

    def score_video(self, video: Union[str, Path, bytes], sample: str = "all", head: str = spec.DEFAULT_HEAD,
                    faces: str = "largest", no_face: str = "skip", timeline: bool = False,
                    name: Optional[str] = None, min_face: float = spec.DETECTOR_MIN_FACE,
                    min_track: int = spec.DEFAULT_MIN_TRACK, explain: int = 0) -> dict:
        """Send an encoded video (path or bytes) to `deepfake_video`; returns a `dfserve score` row (with `explain`
        N: its `evidence`, crops as `png_base64`, heat computed by the server's `frame_classifier`)."""
        if isinstance(video, (str, Path)):
            name = name or str(video)
            data = read_video_file(video, self.max_video_bytes)
        else:
            data = bytes(video)
        from ..pipeline.options import REQUEST_FIELDS, ScoreOptions

        o = ScoreOptions(sample=sample, head=head, faces=faces, no_face=no_face, timeline=timeline, min_face=min_face,
                         min_track=min_track, explain=explain).validate()
        opts = {**{k: v for k, v in o.to_dict().items() if k in REQUEST_FIELDS}, "name": name or "video"}
        try:
            r = self._infer(spec.DEEPFAKE_VIDEO, {T.VIDEO: np.array([data], dtype=np.object_),
                                                  T.OPTIONS: np.array([json.dumps(opts).encode()], dtype=np.object_)})
        except ServerError as exc:  # over a limit of the server: its typed error, the server's message
            marker = f"{RequestLimitError.__name__}: "
            if marker in str(exc):
                raise RequestLimitError(str(exc).split(marker, 1)[1]) from exc
            raise
        return json.loads(r[T.RESULT].reshape(-1)[0])

    def model_info(self) -> dict:
        """{"model_id": checkpoint sha256} of the models the server runs."""
        r = self._infer(spec.DEEPFAKE_VIDEO, {T.VIDEO: np.array([b""], dtype=np.object_),
                                              T.OPTIONS: np.array([b'{"info": true}'], dtype=np.object_)})
        return json.loads(r[T.RESULT].reshape(-1)[0])

    def close(self) -> None:
        self._close_shm()
        self._c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RemoteAggregate:
    """A video's verdict kept by the server's `video_aggregator` (one chunk behind, so END rides on
    the last chunk)."""

    def __init__(self, client: DeepfakeClient, head: str, sequence_id: Optional[int] = None):
        self.c = client
        self.head = head
        self.seq = sequence_id or random.getrandbits(62) + 1
        self._pending = None
        self._started = False

    def add(self, logits: np.ndarray, indices: np.ndarray) -> None:
        if self._pending is not None:
            self._send(*self._pending, end=False)
        self._pending = (logits, indices)

    def _send(self, logits, indices, end: bool) -> dict:
        r = self.c.aggregate(self.seq, logits, indices, self.head, start=not self._started, end=end)
        self._started = True
        return r

    def finish(self):
        from ..pipeline.aggregate import verdict_from_logits

        if self._pending is None:
            return None, 0
        r = self._send(*self._pending, end=True)
        self._pending = None
        if r["p_fake"] is None:
            return None, 0
        return verdict_from_logits(r["verdict_logits"]), r["frames_scored"]
