"""The whole-video scorer: decode threads feed detect -> crop -> classify -> aggregate.

Three stages overlap, each in its own thread(s), joined by bounded queues:

1. decode threads (PyAV releases the GIL) decode (a video as key-frame ranges in parallel with `--split`:
   split_decode.py), split each chunk where the frame size changes and
   make the detector's downscaled input — no full-frame work is left to the later stages;
2. the locate thread runs the detector, picks/tracks faces and crops them;
3. the calling thread classifies crops in batches shared by several videos and tallies verdicts.

The runtimes release the GIL while they compute, so detection of chunk N+1 runs while chunk N's
faces are classified (`overlap=False` runs stages 2 and 3 in the calling thread, one after the
other). Memory is bounded by the queue depths x chunk size and the classifier batch, whatever the
videos' lengths. The per-frame bookkeeping is the shared chunk core (`chunk.py`).
"""
from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import queue
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, List, Optional

import numpy as np

from .. import spec
from ..errors import DfserveError, NoFaceError, VideoError
from .chunk import FrameRecord, VideoTally, records_from_faces, same_size_runs
from .decode import DecodeStats, VideoInfo, cpu_cores, probe
from .evidence import EvidenceKeeper, evidence_entries, fake_segments, numpy_pixels
from .faces import classifier_input, crop_faces, detector_input, faces_per_frame
from .limits import RequestLimits
from .options import FACES_MODES, NO_FACE_MODES, ScoreOptions  # noqa: F401 (re-exported)
from .split_decode import iter_frames_split
from .tracking import IoUTracker

log = logging.getLogger(__name__)

# (path, frames sampled so far, frames expected or None): called from the scoring thread
ProgressFn = Callable[[str, int, Optional[int]], None]


@dataclass
class VideoJob:
    path: str
    order: int
    info: Optional[VideoInfo] = None
    stats: DecodeStats = field(default_factory=DecodeStats)
    tally: Optional[VideoTally] = None
    tracker: Optional[IoUTracker] = None
    expected: Optional[int] = None
    error: Optional[dict] = None
    t0: float = field(default_factory=time.perf_counter)
    failed: bool = False

    def fail(self, exc: BaseException) -> None:
        self.failed, self.error = True, error_dict(exc)


def error_dict(exc: BaseException) -> dict:
    """A row's `error`: the type and message, and for a limit the limit's name (`limit`, machine-readable)."""
    d = {"type": type(exc).__name__, "message": str(exc)}
    if getattr(exc, "limit", None):
        d["limit"] = exc.limit
    return d


def new_tally(opts: ScoreOptions, sink=None, pixels=numpy_pixels) -> VideoTally:
    """A video's tally; with --explain N or --timeline it keeps the evidence (segments; N crops with --explain)."""
    keeper = EvidenceKeeper(opts.explain, pixels) if (opts.explain or opts.timeline) else None
    return VideoTally(opts.head, opts.no_face, opts.timeline, sink, min_track=opts.min_track, evidence=keeper)


def new_tracker(opts: ScoreOptions) -> Optional[IoUTracker]:
    """A face tracker per video with --faces all; None otherwise."""
    return IoUTracker() if opts.faces == "all" else None


def expected_frames(opts: ScoreOptions, info: Optional[VideoInfo]) -> Optional[int]:
    if info is None or info.n_frames is None:
        return None
    return opts.sample.sampler(info.fps, info.n_frames).expected_count()


class _Stop(Exception):
    pass


@dataclass(frozen=True)
class Decoder:
    """What one decode thread decodes whole videos with. A helper (a CPU decoder joining the main decoders:
    `--cpu-decoders`) takes a video only while more videos wait than the main decoders can take at once, so it
    adds throughput where the main decoders are the bound and never holds a batch's last videos back."""

    name: str
    iter_frames: Callable
    helper: bool = False


def locate_pool(runtime, n: int) -> ThreadPoolExecutor:
    """The locate workers' threads, kept with the runtime for its lifetime: a `score()` call submits its workers
    here instead of starting new threads. Per-thread state then survives from call to call: on CUDA, cuDNN keeps
    its execution plans per thread (PyTorch's cuDNN cache is thread-local), so fresh threads per call rebuilt
    the detector's plans on every video (an H200 clip: seconds, benchmarks/results/*h200*/profile-hotpath.log).
    A scorer asking for more workers than the pool has gets a bigger pool."""
    with _POOL_LOCK:
        pool = getattr(runtime, "_dfserve_locate_pool", None)
        if pool is None or pool._max_workers < n:
            if pool is not None:
                pool.shutdown(wait=False)
            pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="dfserve-locate-pool")
            try:
                runtime._dfserve_locate_pool = pool
            except AttributeError:  # a runtime without instance attributes: a pool per call
                pass
        return pool


_POOL_LOCK = threading.Lock()


class _Task:
    """A locate worker submitted to the pool, seen as the thread it was: is_alive() and join(timeout)."""

    def __init__(self, future):
        self.future = future

    def is_alive(self) -> bool:
        return not self.future.done()

    def join(self, timeout: Optional[float] = None) -> None:
        wait([self.future], timeout=timeout)


class Scorer:
    """Scores videos with a runtime (see runtime.py); yields one row dict per video."""

    # detection and classification in two threads (see the module docstring); a device scorer whose
    # runtime cannot be called from two threads at once sets this False
    overlap = True
    # decoded chunks waiting for the locate stage, per decode thread (memory: depth x chunk x frame size;
    # 2 -> 1 cut 1080p peak RSS by ~100 MB with no measurable loss of speed)
    queue_per_decoder = 1.0
    # per-video limits (limits.py; `scoring.make_scorer` sets the config's); None or all 0: none
    limits: Optional[RequestLimits] = None

    def __init__(self, runtime, options: ScoreOptions, model_id: str | None = None,
                 on_progress: Optional[ProgressFn] = None):
        self.rt = runtime
        self.opt = options.validate()
        self.model_id = model_id or getattr(runtime, "model_id", "unknown")
        self.on_progress = on_progress
        self.tags = runtime_fields(runtime)  # rows record the runtime and the classifier's precision
        self.frames_scored_total = 0
        self.frames_decoded_total = 0
        self.videos_by_decoder: Counter = Counter()  # decoder name ("... (joined)": a helper) -> videos it took
        self._count_lock = threading.Lock()

    # ---------------------------------------------------------------- hooks a device scorer overrides
    def iter_frames(self, path, policy, info, stats, chunk=spec.DEFAULT_CHUNK, colors=spec.DEFAULT_COLORS, guard=None):
        """Where frames come from: PyAV, one video decoded as `--split` key-frame ranges (split_decode.py)."""
        return iter_frames_split(path, policy, info, stats, chunk, guard=guard, colors=colors, split=self.opt.split)

    def decoders(self) -> List[Decoder]:
        """The decode threads' decoders: `decode_workers` main ones (`iter_frames`), then `--cpu-decoders`
        helpers (on the CPU: the same PyAV decoders; a device scorer's main decoders may be NVDEC)."""
        main = [Decoder("pyav", self.iter_frames)] * self.opt.decode_workers
        return main + [Decoder("pyav", self.iter_frames, helper=True)] * self.cpu_decoders(nvdec=False)

    def cpu_decoders(self, nvdec: bool) -> int:
        """How many CPU decoders join the main ones: `--cpu-decoders` (a number), or `auto`: with NVDEC
        (cores - spec.CPU_DECODERS_RESERVED_CORES) // spec.CPU_DECODER_CORES, else none."""
        if self.opt.cpu_decoders != spec.CPU_DECODERS_AUTO:
            return int(self.opt.cpu_decoders)
        return max(0, (cpu_cores() - spec.CPU_DECODERS_RESERVED_CORES) // spec.CPU_DECODER_CORES) if nvdec else 0

    def detector_prep(self, frames):
        """Runs in the decode thread: the detector's input for one same-size run (None: done in locate).

        Kept uint8 while it waits in the queue (a quarter of float32's memory); `locate` converts it."""
        if self.opt.faces == "precropped":
            return None
        return detector_input(frames, self.opt.detect_max_side, dtype=np.uint8)

    def locate(self, frames, prep=None) -> list:
        """The faces scored in each frame of one same-size run: lists of Detection (one at most with
        --faces largest)."""
        x, scale = prep if prep is not None else detector_input(frames, self.opt.detect_max_side)
        loc, scores, lm = self.rt.detect(x.astype(np.float32, copy=False))
        return faces_per_frame(loc, scores, x.shape[2], x.shape[3], scale, self.opt.detect_threshold,
                               self.opt.faces, self.opt.min_face, self.opt.box, lm)

    def crop(self, frames, boxes) -> list:
        return list(crop_faces(frames, boxes, self.opt.margin))

    def faces_to_logits(self, faces: list) -> np.ndarray:
        return self.rt.classify(classifier_input(np.stack(faces)))

    def evidence_pixels(self, crop) -> np.ndarray:
        """uint8 [112,112,3] BGR of one crop as `crop` returned it (kept for --explain)."""
        return numpy_pixels(crop)

    def classify_normalised(self, faces: np.ndarray) -> np.ndarray:
        """float32 [B,3,112,112] normalised faces -> logits [B,2] (the --explain heat's classifier passes)."""
        return np.asarray(self.rt.classify(faces))

    # ----------------------------------------------------------------------------- decode side
    def _produce(self, decoder: Decoder, take, out: "queue.Queue", stop: threading.Event, seq,
                 seq_lock: threading.Lock) -> None:
        """Decode thread: videos from `take()` (None: no more for this decoder) -> (seq, message) on `out`, seq
        counting every message of every decoder in the order they enter the queue (what the locate workers'
        output is put back in)."""

        def put(item):
            if not self._put_numbered(out, item, stop, seq, seq_lock):
                raise _Stop()

        while not stop.is_set():
            job = take()
            if job is None:
                return
            with self._count_lock:
                self.videos_by_decoder[decoder.name + (" (joined)" if decoder.helper else "")] += 1
            try:
                guard = self._guard(job)
                job.info = probe(job.path, count_if_unknown=self.opt.sample.needs_frame_count)
                if guard is not None:
                    self.limits.check_info(job.path, job.info.width, job.info.height, job.info.frames_declared)
                put(("start", job))
                kw = {"guard": guard} if guard is not None else {}
                for idx, frames in decoder.iter_frames(job.path, self.opt.sample, job.info, job.stats, self.opt.chunk,
                                                        colors=self.opt.colors, **kw):
                    for run_idx, run in same_size_runs(idx, frames):
                        put(("chunk", job, run_idx, run, self.detector_prep(run)))
                put(("end", job))
            except _Stop:
                return
            except DfserveError as exc:
                self._put_numbered(out, ("error", job, exc), stop, seq, seq_lock)
            except Exception as exc:  # noqa: BLE001 - one bad file never stops a batch
                log.exception("%s: unexpected decode failure", job.path)
                self._put_numbered(out, ("error", job, VideoError(f"{job.path}: {type(exc).__name__}: {exc}")), stop,
                                   seq, seq_lock)

    def _put_numbered(self, out, item, stop, seq, seq_lock) -> bool:
        """Queue (next number, item); numbered under the lock, in queue order: a number is never skipped nor
        taken out of turn. False if the scorer stopped first."""
        with seq_lock:
            return self._put_quiet(out, (next(seq), item), stop)

    def _guard(self, job: VideoJob):
        """The job's frame guard (its clocks start now), after the file-size check; None without limits."""
        if self.limits is None or not self.limits.active:
            return None
        from pathlib import Path

        try:
            size = Path(job.path).stat().st_size
        except OSError:
            size = 0  # missing / unreadable: probe says so
        self.limits.check_upload(size, job.path)
        return self.limits.guard(job.path)

    @staticmethod
    def _put_quiet(out, item, stop) -> bool:
        """Queue an item, waiting while the queue is full; False if the scorer stopped first."""
        while not stop.is_set():
            try:
                out.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    # ---------------------------------------------------------------------------- locate side
    def locate_workers(self) -> int:
        """How many locate workers run (`--streams`): 1 unless asked (CPU cores are the decoders' and the
        runtimes' already); a device scorer picks more. The tracker of --faces all needs its chunks in order."""
        if self.opt.faces == "all":
            return 1
        return max(1, self.opt.streams or 1)

    def worker_context(self, k: int):
        """The context locate worker k runs a chunk in (a device scorer: its own CUDA stream)."""
        return contextlib.nullcontext()

    def _locate_msg(self, msg: tuple) -> tuple:
        """A decode message -> the message the classifier loop reads: chunks become ("staged", job, records).

        A job's state is set up here on its "start" message: its chunks come after it through this same stage.
        """
        if msg[0] == "start":
            job = msg[1]
            job.tally = new_tally(self.opt, pixels=self.evidence_pixels)
            job.tracker = new_tracker(self.opt)
            job.expected = expected_frames(self.opt, job.info)
            job.t0 = time.perf_counter()
        if msg[0] != "chunk":
            return msg
        job = msg[1]
        if job.failed:
            return ("staged", job, None)
        try:
            return ("staged", job, self._stage(job, msg[2], msg[3], msg[4]))
        except Exception as exc:  # noqa: BLE001 - one bad file never stops a batch
            log.exception("%s: failed while locating faces", job.path)
            job.fail(exc)
            return ("staged", job, None)

    def _locate_loop(self, inq: "queue.Queue", out: "queue.Queue", stop: threading.Event, decoders, k: int = 0) -> None:
        """Locate worker k: (seq, message) from the decoders -> (seq, staged message); several workers take
        chunks as they come and the scoring loop puts them back in `seq` order."""
        while not stop.is_set():
            try:
                seq, msg = inq.get(timeout=0.2)
            except queue.Empty:
                if not any(w.is_alive() for w in decoders) and inq.empty():
                    self._put_quiet(out, (None, ("decoders-done",)), stop)
                    return
                continue
            with self.worker_context(k):
                staged = self._locate_msg(msg)
            if not self._put_quiet(out, (seq, staged), stop):
                return

    # ---------------------------------------------------------------------------- score side
    def score(self, paths: Iterable[str]) -> Iterator[dict]:
        jobs = [VideoJob(p, k) for k, p in enumerate(paths)]
        if not jobs:
            return
        path_q: "queue.Queue" = queue.Queue()
        for j in jobs:
            path_q.put(j)
        decs = self.decoders()
        self.videos_by_decoder = Counter()  # this call's counts (the log line below, the GPU bench)
        main = [d for d in decs if not d.helper][:len(jobs)]
        helpers = [d for d in decs if d.helper][:len(jobs) - len(main)]
        n_loc = self.locate_workers() if self.overlap else 1
        out_q: "queue.Queue" = queue.Queue(maxsize=max(n_loc, int(self.queue_per_decoder * (len(main) + len(helpers)))))
        stop = threading.Event()
        seq, seq_lock, take_lock = itertools.count(), threading.Lock(), threading.Lock()

        def taker(reserve: int):
            def take():  # a video from the queue while more than `reserve` wait, else None
                with take_lock:
                    return path_q.get_nowait() if path_q.qsize() > reserve else None
            return take

        workers = [threading.Thread(target=self._produce, args=(d, taker(len(main) if d.helper else 0), out_q, stop,
                                                                seq, seq_lock),
                                    daemon=True, name=f"dfserve-decode-{i}{'-cpu' if d.helper else ''}")
                   for i, d in enumerate(main + helpers)]
        for w in workers:
            w.start()
        threads = list(workers)
        if self.overlap:
            # the locate workers' queue holds few chunks: deeper queues only add memory, not speed
            staged_q: "queue.Queue" = queue.Queue(maxsize=2 * n_loc)
            pool = locate_pool(self.rt, n_loc)
            locs = [_Task(pool.submit(self._locate_loop, out_q, staged_q, stop, workers, k)) for k in range(n_loc)]
            threads += locs
            source, producers = staged_q, locs
        else:
            source, producers = out_q, workers
        pending: List[tuple] = []  # (job, FrameRecord) waiting for a classifier batch
        remaining = len(jobs)
        ahead: List[tuple] = []  # (seq, n, msg) staged out of turn, held until their turn
        tie = itertools.count()
        next_seq, done_workers = 0, 0
        try:
            while remaining:
                if ahead and ahead[0][0] == next_seq:
                    msg = heapq.heappop(ahead)[2]
                    next_seq += 1
                else:
                    try:
                        sq, msg = source.get(timeout=0.5)
                    except queue.Empty:
                        if not any(w.is_alive() for w in producers) and source.empty() and not ahead:
                            break
                        continue
                    if msg[0] == "decoders-done":
                        done_workers += 1
                        if done_workers >= len(producers) and not ahead:
                            break
                        continue
                    if sq != next_seq:  # a chunk another locate worker finished first: hold it
                        heapq.heappush(ahead, (sq, next(tie), msg))
                        continue
                    next_seq += 1
                if not self.overlap:
                    msg = self._locate_msg(msg)
                kind, job = msg[0], msg[1]
                if kind == "staged":
                    recs = msg[2]
                    if job.failed or recs is None:
                        continue
                    job.tally.add(recs)
                    pending.extend((job, r) for r in recs if r.pending)
                    while len(pending) >= self.opt.batch:
                        pending = self._classify(pending, self.opt.batch)
                    if self.on_progress is not None:
                        self.on_progress(job.path, job.tally.frames_sampled, job.expected)
                elif kind in ("end", "error"):
                    if kind == "error":
                        job.fail(msg[2])
                    if any(p[0] is job for p in pending):
                        pending = self._classify(pending, len(pending))
                    remaining -= 1
                    yield self._row(job)
        finally:
            stop.set()
            for w in threads:
                w.join(timeout=5)
            if helpers:
                log.info("videos by decoder: %s", ", ".join(f"{k} {v}" for k, v in self.videos_by_decoder.items()))

    def _stage(self, job: VideoJob, indices: List[int], frames, prep) -> List[FrameRecord]:
        """One same-size run -> records with face boxes (and tracks) and crops for the classifier."""
        if self.opt.faces == "precropped":
            recs = [FrameRecord(i, True) for i in indices]
            todo = [(r, k) for k, r in enumerate(recs)]
        else:
            recs, todo = records_from_faces(indices, self.locate(frames, prep), self.opt.no_face, job.tracker)
        if todo:
            if isinstance(frames, (list, tuple)):
                sel = [frames[k] for _, k in todo]
            else:
                sel = frames[[k for _, k in todo]]
            for (r, _), c in zip(todo, self.crop(sel, [r.box for r, _ in todo])):
                r.crop = c
        return recs

    def _classify(self, pending: List[tuple], n: int) -> List[tuple]:
        head, rest = pending[:n], pending[n:]
        logits = np.asarray(self.faces_to_logits([r.crop for _, r in head]))
        by_job: dict = {}
        for (job, rec), z in zip(head, logits):
            rec.logits = z
            by_job.setdefault(id(job), (job, []))[1].append(rec)
        for job, recs in by_job.values():
            if not job.failed:
                job.tally.scored(recs)  # --explain keeps the crops of the top candidates here
            for rec in recs:
                rec.crop = None
        self.frames_scored_total += len(head)
        return rest

    def _row(self, job: VideoJob) -> dict:
        self.frames_decoded_total += job.stats.frames_decoded
        return make_row(job, self.opt, self.model_id, self.tags, classify=self.classify_normalised)


def runtime_fields(rt) -> dict:
    """What a result row records about the runtime: its name and the classifier's precision."""
    prec = getattr(rt, "precision", None)
    if prec is None:
        prec = "fp16" if getattr(rt, "fp16", False) else "fp32"
    return {"runtime": getattr(rt, "name", type(rt).__name__), "precision": prec}


def make_row(job: VideoJob, opts: ScoreOptions, model_id: str, tags: Optional[dict] = None,
             classify=None) -> dict:
    """The result row of a finished job; the verdict comes from the job's tally (local or server-side).

    `classify` (normalised faces -> logits) computes the --explain heat; without it evidence has no `heat`."""
    info = job.info
    verdict, scored = (None, 0)
    tally = job.tally
    if tally is not None and not job.failed:
        verdict, scored = tally.finish()
    sampled = tally.frames_sampled if tally else 0
    if not job.failed and verdict is None and job.error is None:
        if sampled == 0:
            job.error = error_dict(VideoError(f"{job.path}: the sampling policy {opts.sample} selected "
                                              f"no frame of {job.stats.frames_decoded} decoded"))
        else:
            job.error = error_dict(NoFaceError(
                f"{job.path}: no face found in any of the {sampled} sampled frames; "
                "no verdict (use --no-face frame to classify whole frames as the seed app did)"))
    row = {
        "path": job.path,
        "label": verdict.label if verdict else None,
        "p_fake": round(verdict.p_fake, 6) if verdict else None,
        "confidence": round(verdict.confidence, 2) if verdict else None,
        "frames_decoded": job.stats.frames_decoded,
        "frames_scored": scored if verdict else 0,
        "frames_with_face": tally.frames_with_face if tally else 0,
        "duration_s": round(info.duration_s, 3) if info and info.duration_s else None,
        "fps": round(info.fps, 3) if info and info.fps else None,
        "model": model_id,
        "head": opts.head,
        "sample": str(opts.sample),
        "colors": opts.colors,
        "detector": opts.detector,
        "box_convention": opts.box_used,
        **(tags or {}),
        "elapsed_s": round(time.perf_counter() - job.t0, 3),
        "warning": job.stats.warning,
        "error": job.error,
    }
    if opts.faces == "all":
        row["faces"] = tally.faces() if tally else []
        row["decided_by"] = tally.decided_by if tally else None
    if opts.timeline:
        row["timeline"] = tally.sorted_timeline() if tally else []
    keeper = tally.evidence if tally is not None and not job.failed else None
    if opts.explain or opts.timeline:
        track = keeper.track_for(tally.decided_by) if keeper is not None else None
        fps = info.fps if info and info.fps else None
        row["segments"] = fake_segments(keeper.frames(track), fps) if keeper is not None else []
        if opts.explain:
            row["evidence"] = evidence_entries(keeper, track, fps, classify) if keeper is not None else []
            if not row["evidence"]:
                row["evidence_note"] = ("no evidence: the video could not be scored" if job.failed or keeper is None
                                        else "no evidence: no frame was scored (no face found)")
    return row
