"""Per-request limits: one object (`RequestLimits`), read from one place (`RequestLimits.resolve`), enforced by
every entry (`dfserve score` embedded and on Ray, `dfserve web`, Triton's `deepfake_video`).

The names and defaults are `dfserve.spec.REQUEST_LIMITS`. Where a value comes from, first that is set:
the CLI flag (`--max-frames`), the environment (`DFSERVE_MAX_FRAMES`), the limits file (`--limits FILE` or
`DFSERVE_LIMITS_FILE`: JSON or TOML, keys = the names), then the entry's default (`spec.RequestLimit.default`
for the servers, `local_default` — off — for scoring one's own files). Triton's model reads the values
`dfserve repo build` resolved the same way and wrote into its config.pbtxt parameters.

Checks: `check_upload` (the encoded file's size, before anything is read), `check_info` (the probed
header: frame size, the frame count the container's index declares; before anything is decoded), and
`guard(name)`, the `iter_frames(..., guard=)` callback called with (frames decoded so far, width, height)
for every decoded frame (sampled or not): frames, pixels per frame, total decoded pixels, CPU and wall
seconds. Over a limit: RequestLimitError naming the limit (`.limit`, the machine-readable code) and `name`
(the client's file name, never a server path).

CPU time is the process's (`time.process_time`): FFmpeg decodes in threads of its own, which a thread clock
would not see. A Triton python-backend instance is a process serving one request at a time; where one
process scores several videos at once (`dfserve web --workers N`, the embedded scorer's decode workers), the
figure is theirs together, a conservative bound: `max_wall_s` is the per-request one there.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional

from .. import spec
from ..errors import RequestLimitError, UsageError

NAME_CHARS = 200  # a client's file name is shortened to this in messages
_LIMITS = {lim.param: lim for lim in spec.REQUEST_LIMITS}
ENTRIES = ("server", "local")  # whose defaults: spec.RequestLimit.default / .local_default


@dataclass(frozen=True)
class RequestLimits:
    """Limit values (0: no limit); the field names are the params of `spec.REQUEST_LIMITS`. The defaults are
    the servers' (`RequestLimits.local()`: scoring one's own files, all off)."""

    max_frames: int = int(spec.LIMIT_FRAMES.default)
    max_pixels: int = int(spec.LIMIT_PIXELS.default)
    max_total_pixels: int = int(spec.LIMIT_TOTAL_PIXELS.default)
    max_cpu_s: float = float(spec.LIMIT_CPU_S.default)
    max_wall_s: float = float(spec.LIMIT_WALL_S.default)
    max_upload_bytes: int = int(spec.LIMIT_UPLOAD_BYTES.default)

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            lim = _LIMITS[f.name]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or v == float("inf"):
                raise UsageError(f"{f.name} ({lim.flag}, {lim.env}) must be a number >= 0 (0: no limit), got {v!r}")
            if f.type in ("int", int):
                if not float(v).is_integer():
                    raise UsageError(f"{f.name} ({lim.flag}, {lim.env}) must be a whole number, got {v!r}")
                object.__setattr__(self, f.name, int(v))

    # ------------------------------------------------------------------------------ where values come from
    @classmethod
    def defaults(cls, entry: str = "server") -> "RequestLimits":
        if entry not in ENTRIES:
            raise UsageError(f"limits entry must be one of {', '.join(ENTRIES)}, got {entry!r}")
        return cls(**{lim.param: (lim.default if entry == "server" else lim.local_default)
                      for lim in spec.REQUEST_LIMITS})

    @classmethod
    def local(cls) -> "RequestLimits":
        return cls.defaults("local")

    @classmethod
    def from_params(cls, params: Mapping[str, object], base: Optional["RequestLimits"] = None,
                    source: str = "config parameter") -> "RequestLimits":
        """From string or number values keyed by limit name (config.pbtxt parameters, a limits file); a missing
        one keeps `base`'s value (default: the servers' defaults); other keys are ignored."""
        values = {f.name: getattr(base or cls(), f.name) for f in fields(cls)}
        for name in values:
            raw = params.get(name)
            if raw is None or str(raw).strip() == "":
                continue
            values[name] = _number(raw, f"{source} {name}")
        return cls(**values)

    @classmethod
    def resolve(cls, entry: str = "server", cli: Optional[Mapping[str, object]] = None,
                env: Optional[Mapping[str, str]] = None, file: Optional[Path] = None) -> "RequestLimits":
        """The limits of one entry: CLI values (None: unset) > environment > limits file > the entry's defaults.

        `file`: the `--limits` file, else `$DFSERVE_LIMITS_FILE`, else none."""
        env = os.environ if env is None else env
        limits = cls.defaults(entry)
        path = file or env.get(spec.LIMITS_FILE_ENV) or None
        if path:
            limits = cls.from_params(read_limits_file(Path(path)), limits, source=f"limits file {path}:")
        values = {lim.param: env.get(lim.env) for lim in spec.REQUEST_LIMITS}
        for lim in spec.REQUEST_LIMITS:
            if values[lim.param] is not None and str(values[lim.param]).strip():
                values[lim.param] = _number(values[lim.param], f"environment variable {lim.env}")
        limits = cls.from_params(values, limits)
        if cli:
            limits = cls.from_params({k: v for k, v in cli.items() if v is not None}, limits, source="flag for")
        return limits

    def to_params(self) -> Dict[str, str]:
        """The config.pbtxt parameters (strings), in the spec's order."""
        return {lim.param: lim.config_value(getattr(self, lim.param)) for lim in spec.REQUEST_LIMITS}

    @property
    def active(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    # ---------------------------------------------------------------------------------------------- checks
    def check_upload(self, size: int, name: str) -> None:
        """The encoded file's size, before it is read."""
        if self.max_upload_bytes and size > self.max_upload_bytes:
            _refuse(name, spec.LIMIT_UPLOAD_BYTES, self.max_upload_bytes, f"the file is {size} bytes")

    def check_info(self, name: str, width: int, height: int, frames_declared: Optional[int]) -> None:
        """The probed header, before anything is decoded: the frame size and the frame count the container's
        index declares (an estimate from duration x fps is not held against a file: the decoded frames are)."""
        if self.max_pixels and width * height > self.max_pixels:
            _refuse(name, spec.LIMIT_PIXELS, self.max_pixels, f"its frames are {width}x{height} = "
                                                              f"{width * height} pixels")
        if frames_declared:
            if self.max_frames and frames_declared > self.max_frames:
                _refuse(name, spec.LIMIT_FRAMES, self.max_frames, f"the file declares {frames_declared} frames")
            total = frames_declared * width * height
            if self.max_total_pixels and total > self.max_total_pixels:
                _refuse(name, spec.LIMIT_TOTAL_PIXELS, self.max_total_pixels,
                        f"the file declares {frames_declared} frames of {width}x{height} = {total} pixels")

    def guard(self, name: str, clock: Callable[[], float] = time.process_time,
              wall: Callable[[], float] = time.monotonic) -> "RequestGuard":
        """A frame guard for one request, its CPU and wall clocks started now."""
        return RequestGuard(self, name, clock, wall)


class RequestGuard:
    """Checks one request's decoded frames against its limits (see the module docstring)."""

    def __init__(self, limits: RequestLimits, name: str, clock: Callable[[], float] = time.process_time,
                 wall: Callable[[], float] = time.monotonic):
        self.limits = limits
        self.name = short_name(name)
        self.clock, self.wall = clock, wall
        self.cpu_start, self.wall_start = clock(), wall()
        self.frames = 0
        self.pixels = 0

    def cpu_s(self) -> float:
        return self.clock() - self.cpu_start

    def wall_s(self) -> float:
        return self.wall() - self.wall_start

    def __call__(self, frames: int, width: int, height: int) -> None:
        """`frames` decoded so far (a decoder that skips ahead, e.g. NVDEC seeking, counts what it passed)."""
        lim = self.limits
        self.pixels += max(0, frames - self.frames) * width * height
        self.frames = max(self.frames, frames)
        if lim.max_pixels and width * height > lim.max_pixels:
            _refuse(self.name, spec.LIMIT_PIXELS, lim.max_pixels,
                    f"frame {frames - 1} is {width}x{height} = {width * height} pixels")
        if lim.max_frames and frames > lim.max_frames:
            _refuse(self.name, spec.LIMIT_FRAMES, lim.max_frames, f"more than {lim.max_frames} frames decoded")
        if lim.max_total_pixels and self.pixels > lim.max_total_pixels:
            _refuse(self.name, spec.LIMIT_TOTAL_PIXELS, lim.max_total_pixels,
                    f"{self.pixels} pixels decoded after {frames} frames of {width}x{height}")
        if lim.max_cpu_s:
            used = self.cpu_s()
            if used > lim.max_cpu_s:
                _refuse(self.name, spec.LIMIT_CPU_S, lim.max_cpu_s, f"{used:.2f} CPU seconds used after {frames} frames")
        if lim.max_wall_s:
            took = self.wall_s()
            if took > lim.max_wall_s:
                _refuse(self.name, spec.LIMIT_WALL_S, lim.max_wall_s, f"{took:.2f} s elapsed after {frames} frames")


def _refuse(name: str, which: spec.RequestLimit, value: float, what: str) -> None:
    raise RequestLimitError(f"{short_name(name)}: over the limit of {which.config_value(value)} {which.unit} "
                            f"({which.param}): {what}; the request was stopped", limit=which.param)


def _number(raw, what: str) -> float:
    if isinstance(raw, bool):
        raise UsageError(f"{what} must be a number, got {raw!r}")
    try:
        v = float(raw)
    except (TypeError, ValueError):
        raise UsageError(f"{what} must be a number, got {raw!r}") from None
    return int(v) if v.is_integer() else v


def read_limits_file(path: Path) -> Dict[str, object]:
    """A limits file: JSON (`{"max_frames": 36000, ...}`) or TOML (`max_frames = 36000`), the values at the top
    level or under `limits`. An unknown key is an error (a misspelt limit must not pass silently)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"limits file {path}: cannot be read ({exc.strerror or exc})") from None
    try:
        if Path(path).suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"limits file {path}: not valid {'TOML' if str(path).endswith('.toml') else 'JSON'} ({exc})")
    if isinstance(data, dict) and isinstance(data.get("limits"), dict):
        data = data["limits"]
    if not isinstance(data, dict):
        raise UsageError(f"limits file {path}: expected an object of limit names to numbers")
    unknown = sorted(set(data) - set(_LIMITS))
    if unknown:
        raise UsageError(f"limits file {path}: unknown limit(s) {', '.join(unknown)}; known: {', '.join(_LIMITS)}")
    return data


def add_arguments(p: argparse.ArgumentParser, entry: str) -> None:
    """The limit flags of a command (`--max-frames N`, ..., `--limits FILE`); `entry` sets the defaults shown."""
    title = ("request limits (0: no limit; flag > environment > --limits file > default)" if entry == "server" else
             "request limits (default: off for your own files; flag > environment > --limits file)")
    g = p.add_argument_group(title)
    g.add_argument("--limits", type=Path, metavar="FILE", dest="limits_file",
                   help=f"JSON or TOML file of limit values (default ${spec.LIMITS_FILE_ENV})")
    for lim in spec.REQUEST_LIMITS:
        d = lim.default if entry == "server" else lim.local_default
        g.add_argument(lim.flag, dest=lim.param, type=float, default=None, metavar="N",
                       help=f"at most N {lim.unit} (${lim.env}; default {lim.config_value(d) if d else 'off'})")


def from_args(args, entry: str) -> RequestLimits:
    """The limits of a command parsed with `add_arguments`."""
    cli = {lim.param: getattr(args, lim.param, None) for lim in spec.REQUEST_LIMITS}
    return RequestLimits.resolve(entry, cli, file=getattr(args, "limits_file", None))


def short_name(name: str, limit: int = NAME_CHARS) -> str:
    """A client's file name for messages: printable, at most `limit` characters."""
    name = "".join(c if c.isprintable() else "?" for c in str(name)) or "video"
    if len(name) <= limit:
        return name
    keep = (limit - 3) // 2
    return name[:keep] + "..." + name[len(name) - (limit - 3 - keep):]
