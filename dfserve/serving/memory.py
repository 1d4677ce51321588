"""Memory of the long-running Triton python models (issue #16: a soak's model processes grew and never shrank;
before/after figures: benchmarks/triton_soak.py, benchmarks/results/*/triton_soak.json), also applied to the
`dfserve web` server (issue 25: web/memory.py; figures: benchmarks/web_soak.py).

Three causes, three fixes:
- glibc keeps freed memory in its malloc arenas (one per thread that allocated, up to 8 per core): the
  launcher caps them (MALLOC_ARENA_MAX, serving/server.py) and `RELEASER` calls malloc_trim(0) at most every
  2 s after requests, so the memory of the largest batches goes back to the OS;
- onnxruntime's memory patterns (one plan and one whole-run block per input shape): off in the python models;
- onnxruntime's CPU arena keeps the largest batch's memory: once a model has been idle for 2 s, `RELEASER` has
  it shrunk (`release()` of `pipeline.runtimes.choice.make_session`). The arena is NOT turned off: without it
  the detector ran 1.6-2.2x slower on 2 cores (its buffers page-faulted in anew on every run).

Knobs (for measurements, A/B): DFSERVE_MALLOC_TRIM=0 (no malloc_trim), DFSERVE_ORT_RELEASE=0 (onnxruntime as
before: memory patterns on, arena never shrunk); MALLOC_ARENA_MAX already in the environment wins.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, List

log = logging.getLogger("dfserve.serving")

# glibc's malloc arenas in tritonserver and its python model processes (the launcher's environment)
MALLOC_ARENA_MAX = "2"
RELEASE_INTERVAL_S = 2.0


def ort_release() -> bool:
    """onnxruntime in the python models: memory patterns off and the arena shrunk when idle (default)."""
    return os.environ.get("DFSERVE_ORT_RELEASE", "1") != "0"


class MemoryReleaser:
    """Gives a python model process's freed memory back to the OS, on a background thread, a moment after
    requests end: glibc's malloc_trim(0) at most every `interval` s (also after the last request, so an idle
    server shrinks), and the idle hooks (onnxruntime's arena) once no request has ended for `interval` s."""

    def __init__(self, interval: float = RELEASE_INTERVAL_S, trim: bool = True):
        self.interval = interval
        self.trims = 0
        self.idle_releases = 0
        self._hooks: List[Callable[[], None]] = []
        self._due = threading.Event()
        self._last = 0.0
        self._thread = None
        self._lock = threading.Lock()
        self._trim = None
        if trim:
            try:
                import ctypes

                self._trim = ctypes.CDLL("libc.so.6").malloc_trim  # glibc only; elsewhere: nothing to trim
                self._trim.argtypes, self._trim.restype = [ctypes.c_size_t], ctypes.c_int
            except (OSError, AttributeError):
                self._trim = None

    def add_idle_hook(self, fn: Callable[[], None]) -> None:
        self._hooks.append(fn)

    def request_done(self) -> None:
        if self._trim is None and not self._hooks:
            return
        self._last = time.monotonic()
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, daemon=True, name="dfserve-memory-release")
                    self._thread.start()
        self._due.set()

    def _loop(self) -> None:
        while True:
            self._due.wait()
            self._due.clear()  # requests ending from now on ask for one more round
            time.sleep(self.interval)
            self.release(idle=time.monotonic() - self._last >= self.interval)

    def release(self, idle: bool = True) -> None:
        if idle:
            for fn in self._hooks:
                try:
                    fn()
                except Exception:  # noqa: BLE001 - releasing memory never fails a model
                    log.debug("memory release hook failed", exc_info=True)
            self.idle_releases += 1
        if self._trim is not None:
            self._trim(0)
            self.trims += 1


M_ARENA_MAX = -8  # glibc's mallopt parameter


def cap_malloc_arenas(n: int = int(MALLOC_ARENA_MAX)) -> bool:
    """In a running process (the launcher's environment is too late: glibc read it at start), cap the malloc
    arenas created from now on at `n`, so a server that runs each job in fresh threads does not spread its freed
    memory over up to 8 arenas per core. MALLOC_ARENA_MAX already in the environment wins; False where nothing
    was changed (set there, or not glibc)."""
    if os.environ.get("MALLOC_ARENA_MAX") or os.environ.get("DFSERVE_MALLOC_TRIM", "1") == "0":
        return False
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, int(n)))
    except (OSError, AttributeError):
        return False


RELEASER = MemoryReleaser(trim=os.environ.get("DFSERVE_MALLOC_TRIM", "1") != "0")
