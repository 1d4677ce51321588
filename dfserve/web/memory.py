"""The web server's memory (issue 25: an 8-client soak went from 370 MB ready to 1,057 MB peak RSS and stayed).

The Triton server's fixes (serving/memory.py), applied to the web workers:
- one copy of the models per worker: the worker's scorers for other option sets share its runtime
  (`make_scorer(..., share_with=)`) instead of loading the networks again for each (the page's default,
  `timeline=true`, already differs from the server's base options);
- glibc's malloc arenas capped (`cap_malloc_arenas`, before any worker thread starts: each job's decode threads
  are new threads) and `RELEASER` calling malloc_trim(0) at most every 2 s after jobs end, so the memory of the
  largest frames and batches goes back to the OS;
- onnxruntime's CPU arena shrunk once no job has run for 2 s (the runtime's `release()`).

Knobs as for Triton: DFSERVE_MALLOC_TRIM=0 switches all of it off but the model sharing (A/B measurements);
MALLOC_ARENA_MAX in the environment wins.
"""
from __future__ import annotations

import logging
from typing import Callable

from ..serving.memory import RELEASER, cap_malloc_arenas

log = logging.getLogger("dfserve.web")


def setup() -> None:
    """Once, at start, before the workers' threads exist."""
    if cap_malloc_arenas():
        log.debug("malloc arenas capped for the web server")


def watch(runtime, idle: Callable[[], bool]) -> None:
    """Have `runtime`'s retained memory released when the server is idle (`idle()` true: no job running)."""
    release = getattr(runtime, "release", None)
    if release is None:
        return

    def hook():
        if idle():
            release()

    RELEASER.add_idle_hook(hook)


def job_done() -> None:
    RELEASER.request_done()
