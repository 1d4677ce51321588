"""Split decode (`--split K`): one video decoded as K key-frame ranges in parallel, its frames handed on in
presentation order with their true indices, exactly the frames one decoder gives.

1. The packets are demuxed without decoding (`read_timeline`): their presentation timestamps, sorted, give
   every frame's index, VFR or not; a key frame can start a range when every packet before it in decoding
   order is shown before it (open GOPs: its leading pictures, decoded after it but shown before it, belong
   to the range before, whose decoder runs on past the key frame to give them).
2. Which frames the sampling policy keeps is decided once from those timestamps (`sampled_frames`), as one
   decoder's sampler would decide frame after frame; `first:N` and `uniform:N` end the plan where one
   decoder would stop.
3. Each range's thread (`_decode_range`) opens the file, seeks to its key frame, drops what it decodes
   before that frame, converts the kept frames to BGR and checks every frame's timestamp against its
   index; the caller's thread takes the ranges in order, runs the frame checks (time budget, size, the
   request guard) on every frame as one decoder does, and makes the chunks.

Anything that could give a wrong or missing frame falls back to one decoder (`decode.iter_frames`) with a log
line: no usable timestamps (missing, repeated, restarting as in concatenated TS files), a seek that lands
after its key frame, a frame whose timestamp is not the one its index expects, a range with frames missing
or extra, a range whose decode fails. The fallback resumes after the frames already handed on, so a broken
stream ends as it does with one decoder: a warning after the frames decoded, or the row's error.

PyAV releases the GIL while it decodes, so the ranges decode on as many cores; each range's decoder gets
`spec.SPLIT_CORES_PER_RANGE` FFmpeg threads. Memory: the ranges ahead of the one being handed on hold at
most `spec.SPLIT_BUFFER_MB` of decoded frames per video.
"""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from .. import spec
from ..errors import DfserveError, UsageError
from .decode import (DecodeBudget, DecodeStats, FrameForm, FrameGuard, VideoInfo, bgr_frame, cpu_cores,
                     decoder_stream, ffmsg, frame_checks, iter_frames, note_truncation, open_video)
from .frame_colours import check_colors
from .sampling import SamplePolicy

log = logging.getLogger(__name__)

JOIN_S = 5.0  # how long closing waits for a range's thread to notice it should stop


class SplitFallback(DfserveError):
    """Why a video cannot be split safely. Never leaves this module: it turns into one decoder and a log line."""


def parse_split(value) -> str:
    """`auto` or a whole number of ranges 1..spec.MAX_SPLIT, as a string (the option's one form)."""
    return parse_auto_count(value, "--split", 1, spec.MAX_SPLIT, "of ranges ")


def parse_auto_count(value, option: str, lo: int, hi: int, what: str = "") -> str:
    """`auto` or a whole number lo..hi, as a string: the one form of an option that takes either."""
    text = str(value).strip().lower()
    if text == "auto":
        return text
    try:
        k = int(text)
    except ValueError:
        k = lo - 1
    if isinstance(value, bool) or not lo <= k <= hi:
        raise UsageError(f"{option} must be auto or a whole number {what}from {lo} to {hi}, got {value!r}")
    return str(k)


@dataclass(frozen=True)
class Timeline:
    """A video's frames as its packets say: presentation timestamps in presentation order (index -> pts), the
    stream's time base, and the indices where a range may start (key frames, see the module docstring)."""

    pts: List[int]
    time_base: Fraction
    starts: List[int]
    start_dts: Dict[int, int] = field(default_factory=dict)  # a start's decoding time, where it has one


@dataclass(frozen=True)
class Range:
    first: int  # index of its first frame: a key frame (0 for the first range)
    end: int  # one past its last frame


def read_timeline(path: str, budget: Optional[DecodeBudget] = None) -> Timeline:
    """Demux every video packet (no decoding) into a Timeline; SplitFallback says why one cannot be trusted."""
    import av

    container = open_video(path)
    pts: List[int] = []
    dts: List[Optional[int]] = []
    keys: List[bool] = []
    try:
        vs = container.streams.video[0]
        if vs.time_base is None:
            raise SplitFallback("the stream has no time base")
        tb = Fraction(vs.time_base)
        for pkt in container.demux(vs):
            if not pkt.size:
                continue  # the demuxer's empty end-of-stream packet
            if pkt.pts is None:
                raise SplitFallback(f"packet {len(pts)} has no presentation timestamp")
            if pkt.is_discard:
                raise SplitFallback(f"packet {len(pts)} is marked to be discarded (an edit list)")
            pts.append(int(pkt.pts))
            dts.append(None if pkt.dts is None else int(pkt.dts))
            # a range never starts at a damaged key frame (TS joined by `cat` flag the packets at the joins);
            # damage inside a range shows as a frame decoded with errors, and one decoder takes over
            keys.append(bool(pkt.is_keyframe) and not pkt.is_corrupt)
            if len(pts) > spec.SPLIT_MAX_INDEX_FRAMES:
                raise SplitFallback(f"more than {spec.SPLIT_MAX_INDEX_FRAMES} packets: not indexed")
            if budget is not None and len(pts) % 256 == 0:
                budget.check(0)
    except av.error.FFmpegError as exc:
        raise SplitFallback(f"demuxing stopped after {len(pts)} packets ({ffmsg(exc)})") from exc
    finally:
        container.close()
    return timeline_of(pts, keys, tb, dts)


def timeline_of(pts: List[int], keys: List[bool], time_base: Fraction,
                dts: Optional[List[Optional[int]]] = None) -> Timeline:
    """The Timeline of packets in decoding order (their pts, key-frame flags and dts), or SplitFallback."""
    if not pts:
        raise SplitFallback("no video packet")
    order = sorted(pts)
    if any(a == b for a, b in zip(order, order[1:])):
        raise SplitFallback("repeated timestamps (a concatenated or broken stream)")
    rank = {p: r for r, p in enumerate(order)}
    starts = []
    start_dts = {}
    shown_before = None  # the latest presentation time of the packets decoded so far
    for j, p in enumerate(pts):
        if abs(rank[p] - j) > spec.SPLIT_MAX_REORDER:
            raise SplitFallback(f"packet {j}'s timestamp puts it at frame {rank[p]} (timestamps that restart or "
                                "jump back: a concatenated or broken stream)")
        if keys[j] and j > 0 and shown_before < p:
            starts.append(rank[p])
            if dts is not None and dts[j] is not None:
                start_dts[rank[p]] = dts[j]
        shown_before = p if shown_before is None else max(shown_before, p)
    return Timeline(order, time_base, starts, start_dts)


def sampled_frames(policy: SamplePolicy, info: VideoInfo, timeline: Timeline) -> Tuple[List[bool], bool]:
    """(keep, ended): whether each frame is kept, as one decoder's sampler decides frame after frame, up to the
    frame where that decoder would stop (`len(keep)` frames decoded); `ended`: it runs to the end of the stream."""
    sampler = policy.sampler(info.fps, info.n_frames)
    keep = []
    for i, p in enumerate(timeline.pts):
        keep.append(sampler.keep(i, p * timeline.time_base))
        if sampler.done_after(i):
            return keep, False
    return keep, True


def ranges_wanted(split: str, timeline: Timeline, n: int, cores: int) -> int:
    """How many ranges for `n` frames: `split` (a number), or `auto`: 1 below spec.SPLIT_AUTO_MIN_CORES cores,
    else min(cores // spec.SPLIT_CORES_PER_RANGE, key-frame ranges, n // spec.SPLIT_MIN_FRAMES); never more
    than the key frames allow."""
    possible = 1 + sum(1 for s in timeline.starts if 0 < s < n)
    if split != spec.SPLIT_AUTO:
        return min(int(split), possible)
    if cores < spec.SPLIT_AUTO_MIN_CORES:
        return 1
    return max(1, min(cores // spec.SPLIT_CORES_PER_RANGE, possible, n // spec.SPLIT_MIN_FRAMES))


def plan_ranges(starts: List[int], n: int, k: int) -> List[Range]:
    """At most k ranges covering frames [0, n), each starting at 0 or a start, their lengths near n / k."""
    firsts = [0]
    candidates = [s for s in starts if 0 < s < n]
    for j in range(1, k):
        pool = [c for c in candidates if c > firsts[-1]]
        if not pool:
            break
        target = j * n / k
        firsts.append(min(pool, key=lambda c: (abs(c - target), c)))
    return [Range(f, e) for f, e in zip(firsts, firsts[1:] + [n])]


def iter_frames_split(path: str, policy: SamplePolicy, info: VideoInfo, stats: DecodeStats,
                      chunk: int = spec.DEFAULT_CHUNK, guard: Optional[FrameGuard] = None,
                      colors: str = spec.DEFAULT_COLORS, split: str = spec.DEFAULT_SPLIT,
                      cores: Optional[int] = None,
                      form: Optional[FrameForm] = None) -> Iterator[Tuple[List[int], List[np.ndarray]]]:
    """`decode.iter_frames` with the video decoded as `split` key-frame ranges in parallel (see the module
    docstring): the same (indices, BGR frames) chunks, the same DecodeStats, checks and warnings.
    `stats.ranges` says how many ranges were decoded (1: one decoder). `form`: what each kept frame becomes
    (decode.FrameForm; default BGR)."""
    check_colors(colors)
    split = parse_split(split)
    cores = cores or cpu_cores()
    form = form or bgr_frame
    one = (path, policy, info, stats, chunk, guard, colors, form)
    few = policy.kind == "first" and policy.value < 2 * spec.SPLIT_MIN_FRAMES  # the seed's first:N: not worth it
    if split == "1" or (split == spec.SPLIT_AUTO and (cores < spec.SPLIT_AUTO_MIN_CORES or few)):
        yield from iter_frames(*one)
        return
    try:
        size = Path(path).stat().st_size
    except OSError:
        size = 0
    budget = DecodeBudget(str(path), info.duration_s, size)
    budget.start()
    try:
        timeline = read_timeline(path, budget)
    except SplitFallback as exc:
        log.info("%s: split decode off, one decoder: %s", path, exc)
        yield from iter_frames(*one)
        return
    budget.pause()
    keep, ended = sampled_frames(policy, info, timeline)
    ranges = plan_ranges(timeline.starts, len(keep), ranges_wanted(split, timeline, len(keep), cores))
    if len(ranges) == 1:
        if split != spec.SPLIT_AUTO:
            log.info("%s: split decode off, one decoder: no key frame to start a second range from", path)
        yield from iter_frames(*one)
        return
    frames = _ranges_in_order(path, info, stats, timeline, keep, ranges, partial(_convert, form, colors), cores,
                              frame_checks(str(path), budget, guard), budget, chunk, one)
    idx_buf: List[int] = []
    frm_buf: List[np.ndarray] = []
    for i, arr in frames:
        idx_buf.append(i)
        frm_buf.append(arr)
        if len(idx_buf) >= chunk:
            yield idx_buf, frm_buf
            idx_buf, frm_buf = [], []
    if idx_buf:
        yield idx_buf, frm_buf
    if ended and stats.ranges > 1:
        note_truncation(path, info, stats)


def _ranges_in_order(path, info: VideoInfo, stats: DecodeStats, timeline: Timeline, keep: List[bool],
                     ranges: List[Range], convert, cores: int, check: FrameGuard, budget: DecodeBudget,
                     chunk: int, one: tuple) -> Iterator[Tuple[int, np.ndarray]]:
    """(index, frame) of the kept frames, range after range, each range decoded in its own thread.
    `convert(frame, rotation)`: what a kept frame becomes (a FrameForm with its colour rule)."""
    stop = threading.Event()
    frame_bytes = max(1, info.width * info.height * 3)
    depth = max(chunk, spec.SPLIT_BUFFER_MB * 2 ** 20 // (len(ranges) * frame_bytes))
    queues = [queue.Queue(maxsize=depth) for _ in ranges]
    threads_each = max(1, cores // len(ranges))
    workers = [threading.Thread(target=_decode_range, name=f"dfserve-split-{k}", daemon=True,
                                args=(path, r, timeline, keep, convert, threads_each, q, stop))
               for k, (r, q) in enumerate(zip(ranges, queues))]
    for w in workers:
        w.start()
    stats.ranges = len(ranges)
    done = 0  # frames handed on or checked so far: the next frame expected is `done`
    try:
        budget.start()
        try:
            for q, w in zip(queues, workers):
                while True:
                    item = _next_item(q, w)
                    if item[0] == "done":
                        break
                    if item[0] == "fallback":
                        raise SplitFallback(item[1])
                    _, i, width, height, arr, rotation = item
                    if i != done:  # _decode_range never does this: a last guard against a missing frame
                        raise SplitFallback(f"frame {i} came where frame {done} was expected")
                    stats.frames_decoded = i + 1
                    check(i + 1, width, height)
                    done = i + 1
                    if arr is not None:
                        info.rotation = rotation
                        info.height, info.width = arr.shape[:2]  # rotated display, or a new size mid-stream
                        budget.pause()
                        yield i, arr
                        budget.start()
        finally:
            budget.pause()
    except SplitFallback as exc:
        stop.set()
        log.warning("%s: split decode fell back to one decoder after frame %d: %s", path, done - 1, exc)
        stats.ranges = 1
        for idx, frames in iter_frames(*one):
            for i, arr in zip(idx, frames):
                if i >= done:
                    yield i, arr
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=JOIN_S)


def _convert(form: FrameForm, colors: str, frame, rotation: int):
    """A kept frame through its FrameForm, positionally (a FrameForm's own parameter names are its business)."""
    return form(frame, colors, rotation)


def _next_item(q: "queue.Queue", worker: threading.Thread) -> tuple:
    while True:
        try:
            return q.get(timeout=0.5)
        except queue.Empty:
            if not worker.is_alive() and q.empty():
                return ("fallback", f"{worker.name} ended without a word")


class _Stopped(Exception):
    pass


def _decode_range(path: str, rng: Range, timeline: Timeline, keep: List[bool], convert, threads: int,
                  out: "queue.Queue", stop: threading.Event) -> None:
    """Decode one range; put ("frame", index, width, height, frame (its FrameForm) or None, rotation) for each of
    its frames,
    then ("done",), or ("fallback", why) as soon as a frame would be wrong or the decode fails."""

    def put(item) -> None:
        if not _put_last(out, stop, item):
            raise _Stopped()

    where = f"range of frames {rng.first}-{rng.end - 1}"
    try:
        # seek by the key frame's presentation time, then by its decoding time (the index of MP4 and the
        # timestamp search of MPEG-TS go by decoding times; TS's search is approximate)
        targets = [timeline.pts[rng.first]] if rng.first > 0 else [None]
        if rng.first in timeline.start_dts and timeline.start_dts[rng.first] != targets[0]:
            targets.append(timeline.start_dts[rng.first])
        for n, target in enumerate(targets):
            container = open_video(path)
            try:
                _decode_into(container, path, rng, target, timeline, keep, convert, threads, put, stop)
                return
            except _LandedLate as exc:
                if n == len(targets) - 1:
                    raise SplitFallback(str(exc)) from None
            finally:
                container.close()
    except _Stopped:
        return
    except SplitFallback as exc:
        _put_last(out, stop, ("fallback", f"{where}: {exc}"))
    except Exception as exc:  # noqa: BLE001 - FFmpeg, memory or anything else: one decoder takes over
        _put_last(out, stop, ("fallback", f"{where} failed to decode ({type(exc).__name__}: {ffmsg(exc)})"))


class _LandedLate(Exception):
    """The seek landed after the range's key frame (raised before any frame of the range is put)."""


def _put_last(out: "queue.Queue", stop: threading.Event, item: tuple) -> bool:
    """Queue `item`, waiting while the queue is full; False if `stop` was set first."""
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _decode_into(container, path, rng: Range, target: Optional[int], timeline: Timeline, keep, convert, threads, put,
                 stop) -> None:
    vs = decoder_stream(container, path, threads)
    pts, n_all = timeline.pts, len(timeline.pts)
    if target is not None:
        # the key frame or one before it (then the frames before the range are decoded and dropped)
        container.seek(target, stream=vs, backward=True, any_frame=False)
    i = rng.first
    skipped = False  # frames before the range were decoded (and dropped): decoding reached it from before
    for frame in container.decode(vs):
        if stop.is_set():
            raise _Stopped()
        p = frame.pts
        if p is None:
            raise SplitFallback(f"frame {i} has no timestamp")
        if i == rng.first and p < pts[rng.first]:
            skipped = True
            continue  # before the range: the seek landed earlier, or an open GOP's leading pictures
        if i == rng.end:
            if rng.end < n_all and p == pts[rng.end]:
                break  # the next range's first frame: this range is complete
            raise SplitFallback(f"an extra frame (pts {p}) after its last frame")
        if rng.first > 0 and i == rng.first and (p != pts[i] or not (frame.key_frame or skipped)):
            raise _LandedLate(f"the seek to frame {i} (pts {pts[i]}) landed on pts {p}"
                              f"{'' if frame.key_frame else ', not a key frame'}")
        if p != pts[i] or Fraction(frame.time_base) != timeline.time_base:
            raise SplitFallback(f"frame {i} has pts {p}, its packets say {pts[i]}")
        if rng.first > 0:
            if frame.is_corrupt:  # concealed errors: pixels that depend on where decoding started
                raise SplitFallback(f"frame {i} decoded with errors")
        rotation = frame.rotation or 0
        arr = convert(frame, rotation) if keep[i] else None
        put(("frame", i, frame.width, frame.height, arr, rotation))
        i += 1
        if i == rng.end and rng.end == len(keep) and rng.end < n_all:
            break  # the last frame one decoder would decode (first:N, uniform:N)
    if i == rng.first and rng.first > 0:
        raise _LandedLate(f"the seek to frame {i} (pts {pts[i]}) landed after the last frame")
    if i != rng.end:
        raise SplitFallback(f"{i - rng.first} of its {rng.end - rng.first} frames decoded")
    put(("done",))
