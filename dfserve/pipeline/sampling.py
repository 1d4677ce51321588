"""Frame sampling policies: `all | every:K | fps:R | uniform:N | first:N`.

`fps:R` keeps the first frame of each 1/R-second slot of presentation time when the decoder gives
timestamps (variable frame rate videos, phone clips), and falls back to frame indices at the nominal
rate otherwise; for constant-rate videos both give the same frames.

`first:N` is the seed app's (the first N consecutive frames). The default, `all`, covers the
whole video. A policy is turned into a `Sampler` once the video's frame rate and (estimated)
frame count are known; the sampler answers "keep frame i?" and "can decoding stop after i?".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from ..errors import UsageError

DEFAULT_POLICY = "all"
KINDS = ("all", "every", "fps", "uniform", "first")
HELP = ("all (every frame, default) | every:K (every K-th frame) | fps:R (R frames per second of video) | "
        "uniform:N (N frames spread evenly over the video) | first:N (the first N frames, as the seed app)")


@dataclass(frozen=True)
class SamplePolicy:
    kind: str
    value: float = 0

    def __str__(self) -> str:
        return self.kind if self.kind == "all" else f"{self.kind}:{self.value:g}"

    @property
    def needs_frame_count(self) -> bool:
        return self.kind == "uniform"

    def sampler(self, fps: float, n_frames: int | None) -> "Sampler":
        return Sampler(self, fps, n_frames)


def parse_policy(text: str) -> SamplePolicy:
    text = (text or DEFAULT_POLICY).strip()
    kind, _, arg = text.partition(":")
    kind = kind.lower()
    if kind not in KINDS:
        raise UsageError(f"--sample {text!r}: unknown policy {kind!r}; valid: {HELP}")
    if kind == "all":
        if arg:
            raise UsageError(f"--sample {text!r}: 'all' takes no value")
        return SamplePolicy("all")
    try:
        value = float(arg) if kind == "fps" else int(arg)
    except ValueError:
        raise UsageError(f"--sample {text!r}: {kind} needs a {'number' if kind == 'fps' else 'whole number'} "
                         f"after ':', e.g. {kind}:{'5' if kind != 'fps' else '2.5'}") from None
    if not value > 0 or not math.isfinite(value):
        raise UsageError(f"--sample {text!r}: the value must be positive")
    return SamplePolicy(kind, value)


class Sampler:
    """Decides which decoded frame indices are kept."""

    def __init__(self, policy: SamplePolicy, fps: float, n_frames: int | None):
        self.policy = policy
        self.fps = fps if fps and fps > 0 else 30.0
        self.n_frames = n_frames
        self._targets = None
        self._t0 = None  # fps:R by timestamps: time of the first frame, last slot kept
        self._last_slot = -1
        self._last_t = None
        self._offset = Fraction(0)
        self._rate = Fraction(policy.value).limit_denominator(1_000_000) if policy.kind == "fps" else None
        if policy.kind == "uniform":
            n = n_frames or 0
            k = int(policy.value)
            if n <= 0:
                self._targets = set()
            elif k >= n:
                self._targets = set(range(n))
            else:
                self._targets = {int(round(i * (n - 1) / (k - 1))) if k > 1 else 0 for i in range(k)}

    def keep(self, i: int, t=None) -> bool:
        """Keep decoded frame i (presentation time `t` in seconds, a Fraction or float, if known)?
        Call it once per decoded frame, in decoding order."""
        kind, v = self.policy.kind, self.policy.value
        if kind == "fps" and t is not None:
            return self._keep_time(t)
        if kind == "all":
            return True
        if kind == "every":
            return i % int(v) == 0
        if kind == "first":
            return i < int(v)
        if kind == "fps":
            if v >= self.fps:
                return True
            return i == 0 or math.floor(i * v / self.fps) > math.floor((i - 1) * v / self.fps)
        return i in self._targets  # uniform

    def _keep_time(self, t) -> bool:
        if not isinstance(t, Fraction):
            t = Fraction(t)
        t += self._offset
        if self._last_t is not None and t <= self._last_t:
            # timestamps went backwards or stalled (concatenated streams, broken muxers): continue the
            # timeline one nominal frame after the previous frame
            step = 1 / Fraction(self.fps).limit_denominator(1001)
            self._offset += self._last_t + step - t
            t = self._last_t + step
        self._last_t = t
        if self._t0 is None:
            self._t0 = t
        slot = math.floor((t - self._t0) * self._rate)
        if slot > self._last_slot:
            self._last_slot = slot
            return True
        return False

    def done_after(self, i: int) -> bool:
        """True when no frame after index i can be kept (decoding may stop)."""
        kind = self.policy.kind
        if kind == "first":
            return i >= int(self.policy.value) - 1
        if kind == "uniform":
            return not self._targets or i >= max(self._targets)
        return False

    def expected_count(self) -> int | None:
        """How many frames will be kept (computed, not counted: cheap for any declared frame count);
        for fps:R an estimate from the nominal rate (sampling itself follows the timestamps)."""
        n = self.n_frames
        if n is None:
            return None
        kind, v = self.policy.kind, self.policy.value
        if kind == "all":
            return n
        if kind == "every":
            return -(-n // int(v))
        if kind == "first":
            return min(n, int(v))
        if kind == "uniform":
            return len(self._targets)
        if v >= self.fps or n == 0:
            return n
        return int(math.floor((n - 1) * v / self.fps)) + 1

    def expected(self) -> list[int] | None:
        """The indices that will be kept, where the frame count is known."""
        if self.n_frames is None:
            return None
        out = []
        for i in range(self.n_frames):
            if self.keep(i):
                out.append(i)
            if self.done_after(i):
                break
        return out
