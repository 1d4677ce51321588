"""The whole-video scorer: decode threads feed detect -> crop -> classify -> aggregate.

Decoding runs in worker threads (PyAV releases the GIL) and overlaps classification, which runs
in the calling thread. Frames of several videos share classifier batches. Memory is bounded by
the queue depth x chunk size and the classifier batch, whatever the videos' lengths.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, List, Optional

import numpy as np

from .. import spec
from ..errors import DfserveError, NoFaceError, UsageError, VideoError
from .aggregate import VideoAggregate, p_fake_per_frame
from .decode import DecodeStats, VideoInfo, iter_frames, probe
from .faces import classifier_input, crop_faces, locate_faces
from .options import FACES_MODES, NO_FACE_MODES, ScoreOptions  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

@dataclass
class VideoJob:
    path: str
    order: int
    info: Optional[VideoInfo] = None
    stats: DecodeStats = field(default_factory=DecodeStats)
    agg: Optional[VideoAggregate] = None
    frames_sampled: int = 0
    frames_with_face: int = 0
    timeline: list = field(default_factory=list)
    error: Optional[dict] = None
    t0: float = field(default_factory=time.perf_counter)
    failed: bool = False


def error_dict(exc: BaseException) -> dict:
    return {"type": type(exc).__name__, "message": str(exc)}


class _Stop(Exception):
    pass


class Scorer:
    """Scores videos with a runtime (`classify`, `detect`); yields one row dict per video."""

    def __init__(self, runtime, options: ScoreOptions, model_id: str | None = None):
        self.rt = runtime
        self.opt = options.validate()
        self.model_id = model_id or getattr(runtime, "model_id", "unknown")
        self.frames_scored_total = 0
        self.frames_decoded_total = 0

    # ----------------------------------------------------------------------------- decode side
    def _produce(self, paths: "queue.Queue", out: "queue.Queue", stop: threading.Event) -> None:
        def put(item):
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.2)
                    return
                except queue.Full:
                    continue
            raise _Stop()

        try:
            while not stop.is_set():
                try:
                    job = paths.get_nowait()
                except queue.Empty:
                    return
                try:
                    job.info = probe(job.path, count_if_unknown=self.opt.sample.needs_frame_count)
                    put(("start", job))
                    for idx, frames in self.iter_frames(job.path, self.opt.sample, job.info, job.stats, self.opt.chunk):
                        put(("chunk", job, idx, frames))
                    put(("end", job))
                except _Stop:
                    return
                except DfserveError as exc:
                    put(("error", job, exc))
                except Exception as exc:  # noqa: BLE001 - one bad file never stops a batch
                    log.exception("%s: unexpected decode failure", job.path)
                    put(("error", job, VideoError(f"{job.path}: {type(exc).__name__}: {exc}")))
        except _Stop:
            return

    # ---------------------------------------------------------------------------- score side
    def score(self, paths: Iterable[str]) -> Iterator[dict]:
        jobs = [VideoJob(p, k) for k, p in enumerate(paths)]
        if not jobs:
            return
        path_q: "queue.Queue" = queue.Queue()
        for j in jobs:
            path_q.put(j)
        out_q: "queue.Queue" = queue.Queue(maxsize=max(2, 2 * self.opt.decode_workers))
        stop = threading.Event()
        workers = [threading.Thread(target=self._produce, args=(path_q, out_q, stop), daemon=True,
                                    name=f"dfserve-decode-{i}")
                   for i in range(min(self.opt.decode_workers, len(jobs)))]
        for w in workers:
            w.start()
        pending: List[tuple] = []  # (job, index, box, crop uint8)
        remaining = len(jobs)
        try:
            while remaining:
                try:
                    msg = out_q.get(timeout=0.5)
                except queue.Empty:
                    if not any(w.is_alive() for w in workers) and out_q.empty():
                        break
                    continue
                kind, job = msg[0], msg[1]
                if kind == "start":
                    job.agg = VideoAggregate(self.opt.head)
                    job.t0 = time.perf_counter()
                elif kind == "chunk":
                    if job.failed:
                        continue
                    try:
                        pending.extend(self._prepare(job, msg[2], msg[3]))
                    except Exception as exc:  # noqa: BLE001
                        log.exception("%s: failed while locating faces", job.path)
                        job.failed, job.error = True, error_dict(exc)
                    while len(pending) >= self.opt.batch:
                        pending = self._classify(pending, self.opt.batch)
                elif kind in ("end", "error"):
                    if kind == "error":
                        job.error = error_dict(msg[2])
                        job.failed = True
                    if any(p[0] is job for p in pending):
                        pending = self._classify(pending, len(pending))
                    remaining -= 1
                    yield self._row(job)
        finally:
            stop.set()
            for w in workers:
                w.join(timeout=5)

    # Hooks a device runtime overrides (see gpu_scorer.py): where frames come from, how faces are cut
    # out and how a batch of them becomes logits.
    iter_frames = staticmethod(iter_frames)

    def locate(self, frames) -> list:
        return locate_faces(self.rt.detect, frames, self.opt.detect_max_side, self.opt.detect_threshold)

    def crop(self, frames, boxes) -> list:
        return list(crop_faces(frames, boxes, self.opt.margin))

    def faces_to_logits(self, faces: list) -> np.ndarray:
        return self.rt.classify(classifier_input(np.stack(faces)))

    def _prepare(self, job: VideoJob, indices: List[int], frames: List[np.ndarray]) -> List[tuple]:
        job.frames_sampled += len(indices)
        if self.opt.faces == "precropped":
            faces = [None] * len(frames)
            job.frames_with_face += len(frames)
        else:
            faces = self.locate(frames)
            job.frames_with_face += sum(f is not None for f in faces)
        keep = [k for k, f in enumerate(faces) if f is not None or self.opt.faces == "precropped"
                or self.opt.no_face == "frame"]
        if not keep:
            if self.opt.timeline:
                job.timeline.extend([i, None, None] for i in indices)
            return []
        boxes = [faces[k].box if faces[k] is not None else None for k in keep]
        crops = self.crop([frames[k] for k in keep], boxes)
        if self.opt.timeline:
            kept = set(keep)
            job.timeline.extend([indices[k], None, None] for k in range(len(indices)) if k not in kept)
        return [(job, indices[k], boxes[n], crops[n]) for n, k in enumerate(keep)]

    def _classify(self, pending: List[tuple], n: int) -> List[tuple]:
        head, rest = pending[:n], pending[n:]
        logits = self.faces_to_logits([p[3] for p in head])
        by_job = {}
        for k, p in enumerate(head):
            by_job.setdefault(id(p[0]), (p[0], []))[1].append(k)
        pf = p_fake_per_frame(logits) if self.opt.timeline else None
        for job, ks in by_job.values():
            if job.failed or job.agg is None:
                continue
            job.agg.add(logits[ks], [head[k][1] for k in ks])
            if self.opt.timeline:
                for k in ks:
                    box = head[k][2]
                    job.timeline.append([head[k][1], round(float(pf[k]), 6),
                                         None if box is None else [round(float(v), 1) for v in box]])
        self.frames_scored_total += len(head)
        return rest

    def _row(self, job: VideoJob) -> dict:
        self.frames_decoded_total += job.stats.frames_decoded
        return make_row(job, self.opt, self.model_id)


def make_row(job: VideoJob, opts: ScoreOptions, model_id: str, verdict=None, scored: int | None = None) -> dict:
    """The result row of a finished job. The verdict comes from the job's running aggregate unless given
    (the Triton path gets it from the server's video_aggregator)."""
    info = job.info
    if verdict is None and job.agg is not None and not job.failed:
        verdict = job.agg.verdict()
    if scored is None:
        scored = job.agg.count if job.agg is not None else 0
    if job.failed:
        verdict = None
    if not job.failed and verdict is None and job.error is None:
        if job.frames_sampled == 0:
            job.error = error_dict(VideoError(f"{job.path}: the sampling policy {opts.sample} selected "
                                              f"no frame of {job.stats.frames_decoded} decoded"))
        else:
            job.error = error_dict(NoFaceError(
                f"{job.path}: no face found in any of the {job.frames_sampled} sampled frames; "
                "no verdict (use --no-face frame to classify whole frames as the seed app did)"))
    row = {
        "path": job.path,
        "label": verdict.label if verdict else None,
        "p_fake": round(verdict.p_fake, 6) if verdict else None,
        "confidence": round(verdict.confidence, 2) if verdict else None,
        "frames_decoded": job.stats.frames_decoded,
        "frames_scored": scored if verdict else 0,
        "frames_with_face": job.frames_with_face,
        "duration_s": round(info.duration_s, 3) if info and info.duration_s else None,
        "fps": round(info.fps, 3) if info and info.fps else None,
        "model": model_id,
        "head": opts.head,
        "sample": str(opts.sample),
        "elapsed_s": round(time.perf_counter() - job.t0, 3),
        "warning": job.stats.warning,
        "error": job.error,
    }
    if opts.timeline:
        row["timeline"] = sorted(job.timeline, key=lambda t: t[0])
    return row
