"""`dfserve score --server HOST:PORT`: the same rows as the embedded runtime, computed by Triton.

Videos are decoded here (PyAV) and their sampled frames streamed to the `deepfake_frames` ensemble;
each video's verdict is kept by the server's stateful `video_aggregator` under its own sequence id.
`--faces precropped` crops/normalises here and calls `frame_classifier`. `--faces all` and `--explain N` send
the encoded video to `deepfake_video`, which returns the whole row (evidence crops base64, as the HTTP API does;
`dfserve score --out` writes them to files).
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Iterable, Iterator

from ..errors import UsageError
from ..pipeline.engine import ScoreOptions
from .triton import DeepfakeClient, RemoteAggregate

log = logging.getLogger(__name__)


class RemoteScorer:
    def __init__(self, url: str, options: ScoreOptions, timeout: float = 300.0):
        from .. import spec

        if options.detect_max_side != spec.DETECTOR_MAX_SIDE or options.margin:
            raise UsageError("--detect-size and --margin are set in the server's model repository; "
                             "they cannot be changed per request with --server")
        self.url = url
        self.opt = options
        self.timeout = timeout
        with DeepfakeClient(url, timeout=timeout) as c:
            c.wait_ready(timeout=30)
            self.model_id = c.model_info()["model_id"]

    def _score_one(self, client: DeepfakeClient, path: str) -> dict:
        from ..pipeline.frames_scoring import FramesModels, score_video_frames

        if self.opt.faces == "all" or self.opt.explain:
            # every face, or evidence: the server's deepfake_video decodes, detects, tracks and (--explain) keeps the
            # evidence crops and computes their heat with its frame_classifier
            o = self.opt
            return client.score_video(path, sample=str(o.sample), head=o.head, faces=o.faces, no_face=o.no_face,
                                      timeline=o.timeline, min_face=o.min_face, min_track=o.min_track,
                                      explain=o.explain)

        def fused(frames):
            r = client.infer_frames(frames)
            return r.boxes, r.has_face, r.logits

        models = FramesModels(frames_fn=fused, classify_fn=client.classify_faces)
        return score_video_frames(path, self.opt, models, self.model_id, sink=RemoteAggregate(client, self.opt.head))

    def score(self, paths: Iterable[str]) -> Iterator[dict]:
        paths = list(paths)
        if not paths:
            return
        todo: "queue.Queue" = queue.Queue()
        for p in paths:
            todo.put(p)
        done: "queue.Queue" = queue.Queue()
        stop = threading.Event()

        def work():
            with DeepfakeClient(self.url, timeout=self.timeout) as client:
                while not stop.is_set():
                    try:
                        p = todo.get_nowait()
                    except queue.Empty:
                        return
                    try:
                        done.put(self._score_one(client, p))
                    except Exception as exc:  # noqa: BLE001 - a failure is that video's row, never a lost row
                        log.exception("%s: scoring through %s failed", p, self.url)
                        done.put(_error_row(p, self.opt, self.model_id, exc))

        workers = [threading.Thread(target=work, daemon=True, name=f"dfserve-remote-{i}")
                   for i in range(min(self.opt.decode_workers, len(paths)))]
        for w in workers:
            w.start()
        try:
            for _ in paths:
                while True:
                    try:
                        yield done.get(timeout=0.5)
                        break
                    except queue.Empty:
                        if not any(w.is_alive() for w in workers) and done.empty():
                            raise RuntimeError("remote scoring workers stopped before all videos were scored")
        finally:
            stop.set()
            for w in workers:
                w.join(timeout=30)


def _error_row(path: str, opts: ScoreOptions, model_id: str, exc: BaseException) -> dict:
    from ..errors import DfserveError, VideoError
    from ..pipeline.engine import VideoJob, make_row

    job = VideoJob(path, 0)
    job.fail(exc if isinstance(exc, DfserveError) else VideoError(f"{path}: {type(exc).__name__}: {exc}"))
    return make_row(job, opts, model_id)
