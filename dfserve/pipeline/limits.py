"""Per-request limits (frames decoded, pixels per frame, CPU seconds), checked on every decoded frame.

The names and defaults are `dfserve.spec.REQUEST_LIMITS`; the Triton `deepfake_video` model reads its
values from its config.pbtxt parameters. `RequestLimits.guard(name)` starts a request: the guard is
the `iter_frames(..., guard=)` callback, called with (frames decoded so far, width, height) for every
frame of the stream (sampled or not), and raises RequestLimitError naming the limit and `name` (the
client's file name, never a server path).

CPU time is the process's (`time.process_time`): FFmpeg decodes in threads of its own, which a
thread clock would not see, and a Triton python-backend instance is a process serving one request
at a time. In a process that runs several requests at once, pass a clock of your own.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Callable, Dict, Mapping

from .. import spec
from ..errors import RequestLimitError, UsageError

NAME_CHARS = 200  # a client's file name is shortened to this in messages
_LIMITS = {lim.param: lim for lim in spec.REQUEST_LIMITS}


@dataclass(frozen=True)
class RequestLimits:
    """Limit values (0: no limit); the field names are the config parameters of `spec.REQUEST_LIMITS`."""

    max_frames: int = int(spec.LIMIT_FRAMES.default)
    max_pixels: int = int(spec.LIMIT_PIXELS.default)
    max_cpu_s: float = float(spec.LIMIT_CPU_S.default)

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            lim = _LIMITS[f.name]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or v == float("inf"):
                raise UsageError(f"{f.name} ({lim.flag}) must be a number >= 0 (0: no limit), got {v!r}")
            if f.type in ("int", int) and not float(v).is_integer():
                raise UsageError(f"{f.name} ({lim.flag}) must be a whole number, got {v!r}")

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> "RequestLimits":
        """From config.pbtxt parameters (strings); a missing one keeps its default."""
        values = {}
        for f in fields(cls):
            raw = params.get(f.name)
            if raw is None or str(raw).strip() == "":
                continue
            try:
                values[f.name] = float(raw)
            except ValueError:
                raise UsageError(f"config parameter {f.name} must be a number, got {raw!r}") from None
            if f.type in ("int", int) and values[f.name].is_integer():
                values[f.name] = int(values[f.name])
        return cls(**values)

    def to_params(self) -> Dict[str, str]:
        """The config.pbtxt parameters (strings), in the spec's order."""
        return {lim.param: lim.config_value(getattr(self, lim.param)) for lim in spec.REQUEST_LIMITS}

    def guard(self, name: str, clock: Callable[[], float] = time.process_time) -> "RequestGuard":
        """A frame guard for one request, its CPU clock started now."""
        return RequestGuard(self, name, clock)


class RequestGuard:
    """Checks one request's frames against its limits (see the module docstring)."""

    def __init__(self, limits: RequestLimits, name: str, clock: Callable[[], float] = time.process_time):
        self.limits = limits
        self.name = short_name(name)
        self.clock = clock
        self.cpu_start = clock()

    def cpu_s(self) -> float:
        return self.clock() - self.cpu_start

    def __call__(self, frames: int, width: int, height: int) -> None:
        lim = self.limits
        if lim.max_pixels and width * height > lim.max_pixels:
            self._refuse(spec.LIMIT_PIXELS, lim.max_pixels,
                         f"frame {frames - 1} is {width}x{height} = {width * height} pixels")
        if lim.max_frames and frames > lim.max_frames:
            self._refuse(spec.LIMIT_FRAMES, lim.max_frames, f"more than {lim.max_frames} frames decoded")
        if lim.max_cpu_s:
            used = self.cpu_s()
            if used > lim.max_cpu_s:
                self._refuse(spec.LIMIT_CPU_S, lim.max_cpu_s, f"{used:.2f} CPU seconds used after {frames} frames")

    def _refuse(self, which: spec.RequestLimit, value: float, what: str) -> None:
        raise RequestLimitError(f"{self.name}: over the server's limit of {which.config_value(value)} {which.unit} "
                                f"({which.param}): {what}; the request was stopped")


def short_name(name: str, limit: int = NAME_CHARS) -> str:
    """A client's file name for messages: printable, at most `limit` characters."""
    name = "".join(c if c.isprintable() else "?" for c in str(name)) or "video"
    if len(name) <= limit:
        return name
    keep = (limit - 3) // 2
    return name[:keep] + "..." + name[len(name) - (limit - 3 - keep):]
