"""Memory of the long-running Triton python models (issue #16: a soak's model processes grew 2.7 -> 3.9 GB
and never shrank; measured before/after in benchmarks/triton_soak.py and benchmarks/results/*/triton_soak.json).

Two causes, two fixes here: onnxruntime's CPU arena and memory patterns (`ort_arena`: off in the python
models) and freed memory kept in glibc's malloc arenas (`MallocTrimmer`). The launcher also caps glibc's
arenas with MALLOC_ARENA_MAX (serving/server.py).
"""
from __future__ import annotations

import os
import threading
import time

# glibc's malloc arenas in tritonserver and its python model processes (the launcher's environment; a value
# already in the environment wins). glibc's default is 8 per core, each keeping its own freed memory.
MALLOC_ARENA_MAX = "2"

class MallocTrimmer:
    """Hands the process's freed heap memory back to the OS: glibc's malloc_trim(0), at most every
    `interval` s, on a background thread, a moment after requests end (also after the last one, so an idle
    server shrinks). Without it, a python model's freed batch buffers stay in glibc's arenas (one per
    thread that allocated) and its memory only ever grows to the largest batches it has seen."""

    def __init__(self, interval: float):
        self.interval = interval
        self.trims = 0
        self._due = threading.Event()
        self._thread = None
        self._lock = threading.Lock()
        self._fn = None
        if interval > 0:
            try:
                import ctypes

                self._fn = ctypes.CDLL("libc.so.6").malloc_trim  # glibc only; elsewhere: do nothing
                self._fn.argtypes, self._fn.restype = [ctypes.c_size_t], ctypes.c_int
            except (OSError, AttributeError):
                self._fn = None

    def request_done(self) -> None:
        if self._fn is None:
            return
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, daemon=True, name="dfserve-malloc-trim")
                    self._thread.start()
        self._due.set()

    def _loop(self) -> None:
        while True:
            self._due.wait()
            time.sleep(self.interval)  # at most one trim per interval; requests that end meanwhile share it
            self._due.clear()
            self._fn(0)
            self.trims += 1


# DFSERVE_MALLOC_TRIM_S: seconds between trims in the python models (0: never; default 2)
TRIMMER = MallocTrimmer(float(os.environ.get("DFSERVE_MALLOC_TRIM_S", "2") or 0))


def ort_arena() -> bool:
    """onnxruntime's CPU memory arena in the python models: off (it holds the largest batch's memory and one
    memory plan per input shape for good); DFSERVE_ORT_ARENA=1 turns it back on (measurements, A/B)."""
    return os.environ.get("DFSERVE_ORT_ARENA", "0") == "1"
