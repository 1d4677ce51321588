"""Bounded worker pool + bounded queue that runs upload jobs through the pipeline's Scorer.

Each worker thread owns its scorers (a scorer is not thread-safe), one per distinct option set, built
with `dfserve.scoring.make_scorer` and reused (model loading is the expensive part); at most
`MAX_SCORERS_PER_WORKER` are kept, least recently used dropped first.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections import OrderedDict, deque
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from ..errors import DfserveError
from ..pipeline.options import ScoreOptions
from ..pipeline.results import public_row
from ..scoring import ScorerConfig, make_scorer
from . import memory
from .store import JobStore
from .thumbs import make_thumbnails

log = logging.getLogger("dfserve.web")

MAX_SCORERS_PER_WORKER = 4
_STOP = object()


def expected_frames(path: str, opts: ScoreOptions) -> Optional[int]:
    """How many frames the sampling policy will pick from this video (None when unknown)."""
    from ..pipeline.decode import probe

    try:
        info = probe(path, count_if_unknown=opts.sample.needs_frame_count)
    except DfserveError:
        return None
    if not info.n_frames:
        return None
    return opts.sample.sampler(info.fps, info.n_frames).expected_count()


def attach_progress(scorer, fn: Callable[[str, int], None]) -> Callable[[], None]:
    """Report frames decoded per video while `scorer.score` runs; returns a function that detaches it.

    Uses the scorer's own `on_progress(path, frames_done, frames_expected)` hook when it has one; else,
    for the embedded Scorer, wraps its `iter_frames` hook (per instance: the engine is not edited).
    Scorers with neither (the Triton-backed one) report no frame progress: the job is just `running`.
    """
    if hasattr(scorer, "on_progress"):
        old = scorer.on_progress
        scorer.on_progress = lambda path, done, expected=None: fn(path, done)
        return lambda: setattr(scorer, "on_progress", old)
    base = getattr(scorer, "iter_frames", None)
    if base is None:
        return lambda: None

    def counting(path, *args, **kw):
        n = 0
        for idx, frames in base(path, *args, **kw):
            n += len(idx)
            fn(path, n)
            yield idx, frames

    scorer.iter_frames = counting
    return lambda: scorer.__dict__.pop("iter_frames", None)


class Runner:
    def __init__(self, store: JobStore, uploads: Path, thumbs: Path, config: ScorerConfig,
                 base_options: ScoreOptions, workers: int = 1, queue_size: int = 16, first_scorer=None):
        self.store = store
        self.uploads = Path(uploads)
        self.thumbs = Path(thumbs)
        self.config = config
        self.base = base_options
        self.n_workers = max(1, int(workers))
        self.queue_size = max(1, int(queue_size))
        self._q: "queue.Queue" = queue.Queue()
        self._lock = threading.Lock()
        self._queued = 0  # jobs admitted and not yet picked by a worker (the bounded part)
        self._pending: set = set()  # ids in the queue
        self._cancelled: set = set()  # ids deleted while queued: skipped when popped
        self._progress: Dict[str, Tuple[int, Optional[int]]] = {}
        self._stop = threading.Event()
        self._threads = []
        self._ready = 0
        self._running = 0  # jobs inside a scorer now (memory release waits for 0)
        self._runtimes: "weakref.WeakSet" = weakref.WeakSet()  # loaded model copies (GET /readyz `models_loaded`)
        self._first_scorer = first_scorer  # built by the CLI to fail fast on bad model files
        self.started = time.time()
        self.jobs_done = 0
        self._durations: "deque[float]" = deque(maxlen=20)  # seconds per recent job, for Retry-After

    # ----------------------------------------------------------------------------- admission
    def try_reserve(self) -> bool:
        with self._lock:
            if self._queued >= self.queue_size:
                return False
            self._queued += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._queued = max(0, self._queued - 1)

    def enqueue(self, job_id: str, reserved: bool = True) -> None:
        with self._lock:
            if not reserved:
                self._queued += 1
            self._pending.add(job_id)
        self._q.put(job_id)

    def cancel_queued(self, job_id: str) -> None:
        """A queued job was deleted: free its queue slot now (the worker skips the id when it pops it)."""
        with self._lock:
            if job_id in self._pending:
                self._pending.discard(job_id)
                self._cancelled.add(job_id)
                self._queued = max(0, self._queued - 1)

    def _popped(self, job_id: str) -> bool:
        """Account for a popped id; False when it was cancelled while queued."""
        with self._lock:
            if job_id in self._cancelled:
                self._cancelled.discard(job_id)
                return False
            self._pending.discard(job_id)
            self._queued = max(0, self._queued - 1)
            return True

    def retry_after(self) -> int:
        """Seconds a refused client should wait: until about one queue slot frees (recent job times), 1..300."""
        typical = sorted(self._durations)[len(self._durations) // 2] if self._durations else 5.0
        return int(min(300, max(1, round(typical / self.n_workers))))

    @property
    def queued(self) -> int:
        return self._queued

    def progress(self, job_id: str) -> Optional[Tuple[int, Optional[int]]]:
        return self._progress.get(job_id)

    def _count_models(self, scorer) -> None:
        rt = getattr(scorer, "rt", None)
        if rt is not None:
            with self._lock:
                self._runtimes.add(rt)

    @property
    def models_loaded(self) -> int:
        """Copies of the models in memory (one per worker: a worker's scorers share them; 0 with --server)."""
        with self._lock:
            return len(self._runtimes)

    @property
    def ready(self) -> bool:
        return self._ready == self.n_workers and all(t.is_alive() for t in self._threads)

    # -------------------------------------------------------------------------------- workers
    def start(self) -> None:
        for job_id in self.store.requeue_running():
            log.info("re-queued job %s left over from the last run", job_id)
            self.enqueue(job_id, reserved=False)
        for i in range(self.n_workers):
            t = threading.Thread(target=self._work, name=f"dfserve-web-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop taking jobs; wait up to `timeout` for running ones. False if a job was still running (it stays
        `running` in the store and is re-queued at the next start)."""
        self._stop.set()
        for _ in self._threads:
            self._q.put(_STOP)
        deadline = time.time() + timeout
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.time()))
        return not any(t.is_alive() for t in self._threads)

    def _work(self) -> None:
        scorers: "OrderedDict[str, object]" = OrderedDict()
        try:
            with self._lock:
                first, self._first_scorer = self._first_scorer, None
            home = scorers[self.base.to_json()] = first or make_scorer(self.base, self.config)
            memory.watch(getattr(home, "rt", None), lambda: self._running == 0)
            self._count_models(home)
        except Exception:  # noqa: BLE001 - readyz stays false, the log says why
            log.exception("worker %s could not load the models", threading.current_thread().name)
            return
        with self._lock:
            self._ready += 1
        while not self._stop.is_set():
            job_id = self._q.get()
            if job_id is _STOP:
                break
            if not self._popped(job_id):
                continue
            with self._lock:
                self._running += 1
            try:
                self._run(job_id, scorers, home)
            except Exception:  # noqa: BLE001 - the job fails, the worker lives on
                log.exception("job %s: unexpected failure", job_id)
                self.store.finish(job_id, "failed", None, {"type": "InternalError",
                                                           "message": "the server failed while scoring this job"})
            finally:
                self._progress.pop(job_id, None)
                with self._lock:
                    self._running -= 1
                memory.job_done()  # freed memory back to the OS soon after (web/memory.py)

    def _scorer(self, opts: ScoreOptions, scorers: "OrderedDict[str, object]", home=None):
        key = opts.to_json()
        if key in scorers:
            scorers.move_to_end(key)
            return scorers[key]
        scorer = make_scorer(opts, self.config, share_with=home)  # one copy of the models per worker
        self._count_models(scorer)
        scorers[key] = scorer
        while len(scorers) > MAX_SCORERS_PER_WORKER:
            scorers.popitem(last=False)
        return scorer

    def _run(self, job_id: str, scorers, home=None) -> None:
        if not self.store.mark_running(job_id):
            return  # deleted (or already taken) while queued
        job = self.store.get(job_id)
        if job is None:
            return
        opts = ScoreOptions.from_json(job["options"])
        path = str(self.uploads / job["upload"])
        self._progress[job_id] = (0, expected_frames(path, opts))

        def on_frames(_path, done):
            self._progress[job_id] = (done, self._progress.get(job_id, (0, None))[1])

        t0 = time.time()
        scorer = self._scorer(opts, scorers, home)
        detach = attach_progress(scorer, on_frames)
        try:
            rows = list(scorer.score([path]))
        finally:
            detach()
        row = rows[0] if rows else {"error": {"type": "InternalError", "message": "the scorer returned no row"}}
        row = public_row(row, path, job["filename"])
        thumbs = []
        if not row.get("error") and row.get("timeline"):
            try:
                thumbs = make_thumbnails(path, row["timeline"], self.thumbs, job_id)
            except Exception:  # noqa: BLE001 - thumbnails are decoration; the verdict stands
                log.exception("job %s: thumbnails failed", job_id)
        status = "failed" if row.get("error") else "done"
        if self.store.get(job_id) is None:  # deleted while running: drop the result and any thumbnails
            remove_job_files(self.uploads, self.thumbs, {"upload": job["upload"], "thumbs": thumbs})
            return
        self.store.finish(job_id, status, row, row.get("error"), thumbs)
        self._durations.append(time.time() - t0)
        self.jobs_done += 1


def remove_job_files(uploads: Path, thumbs: Path, job: dict) -> None:
    files = [uploads / job["upload"]] + [thumbs / t["file"] for t in (job.get("thumbs") or [])]
    for f in files:
        try:
            f.unlink()
        except FileNotFoundError:
            pass
