"""Video decoding on the CPU with PyAV (FFmpeg). Frames come out as BGR uint8, as OpenCV gives them.

Every failure becomes a VideoError naming the file and the problem: missing, empty, not a video,
corrupt, absurd size. A stream that breaks part-way yields the frames decoded so far and records
the problem in `DecodeStats.warning` (the verdict then covers those frames).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np

from ..errors import VideoError
from .sampling import SamplePolicy

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".flv", ".wmv",
                    ".3gp", ".hevc", ".h264", ".265", ".264"}
MAX_SIDE = 8192  # pixels; larger frames are refused as absurd
MAX_PIXELS = 8192 * 4320


@dataclass
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float
    n_frames: Optional[int]  # from the container, or counted; None if unknown
    duration_s: Optional[float]
    codec: str


@dataclass
class DecodeStats:
    frames_decoded: int = 0
    warning: Optional[str] = None


def _av():
    import av  # PyAV is a core dependency

    return av


def _open(path: str):
    av = _av()
    p = Path(path)
    if not p.exists():
        raise VideoError(f"{path}: no such file")
    if p.is_dir():
        raise VideoError(f"{path}: is a folder, not a video file")
    if p.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    try:
        container = av.open(str(p), mode="r")
    except av.error.FFmpegError as exc:
        raise VideoError(f"{path}: not a readable video ({_ffmsg(exc)})") from exc
    except Exception as exc:  # noqa: BLE001 - PyAV may raise plain OSError/ValueError on odd files
        raise VideoError(f"{path}: cannot be opened as a video ({type(exc).__name__}: {exc})") from exc
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video stream (is it an audio or image file?)")
    return container


def _ffmsg(exc) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def probe(path: str, count_if_unknown: bool = False) -> VideoInfo:
    """Read the stream's geometry, frame rate and frame count (counting packets if asked and unknown)."""
    container = _open(path)
    try:
        vs = container.streams.video[0]
        cc = vs.codec_context
        w, h = int(cc.width or 0), int(cc.height or 0)
        if w <= 0 or h <= 0:
            raise VideoError(f"{path}: video stream has no valid frame size ({w}x{h})")
        if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
            raise VideoError(f"{path}: absurd frame size {w}x{h} (at most {MAX_SIDE} per side and "
                             f"{MAX_PIXELS} pixels)")
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        fps = float(rate) if rate else 0.0
        duration = None
        if vs.duration is not None and vs.time_base is not None:
            duration = float(vs.duration * vs.time_base)
        elif container.duration:
            duration = container.duration / 1_000_000
        n = int(vs.frames) if vs.frames else None
        if n is None and count_if_unknown:
            n = sum(1 for pkt in container.demux(vs) if pkt.size)
        if n is None and duration and fps:
            n = int(round(duration * fps))
        return VideoInfo(str(path), w, h, fps, n, duration, cc.name)
    finally:
        container.close()


def iter_frames(path: str, policy: SamplePolicy, info: VideoInfo, stats: DecodeStats,
                chunk: int = 16) -> Iterator[Tuple[List[int], List[np.ndarray]]]:
    """Decode the video, yield (indices, BGR frames) chunks of the sampled frames."""
    av = _av()
    sampler = policy.sampler(info.fps, info.n_frames)
    container = _open(path)
    idx_buf: List[int] = []
    frm_buf: List[np.ndarray] = []
    try:
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        i = -1
        try:
            for frame in container.decode(vs):
                i += 1
                stats.frames_decoded = i + 1
                if sampler.keep(i):
                    if frame.width != info.width or frame.height != info.height:
                        # resolution change mid-stream: keep going with the new size
                        info.width, info.height = frame.width, frame.height
                    idx_buf.append(i)
                    frm_buf.append(frame.to_ndarray(format="bgr24"))
                    if len(idx_buf) >= chunk:
                        yield idx_buf, frm_buf
                        idx_buf, frm_buf = [], []
                if sampler.done_after(i):
                    break
        except av.error.FFmpegError as exc:
            if stats.frames_decoded == 0:
                raise VideoError(f"{path}: corrupt video, no frame could be decoded ({_ffmsg(exc)})") from exc
            stats.warning = f"decoding stopped after frame {stats.frames_decoded - 1}: {_ffmsg(exc)}"
            log.warning("%s: %s", path, stats.warning)
        if stats.frames_decoded == 0:
            raise VideoError(f"{path}: no frame could be decoded (truncated or corrupt video)")
        if idx_buf:
            yield idx_buf, frm_buf
    finally:
        container.close()


def find_videos(paths, recursive: bool = True) -> List[str]:
    """Expand files, folders (searched recursively for video files) and @list.txt files."""
    out: List[str] = []
    for raw in paths:
        raw = str(raw)
        if raw.startswith("@"):
            lst = Path(raw[1:])
            if not lst.is_file():
                from ..errors import UsageError

                raise UsageError(f"list file {lst} does not exist")
            lines = [ln.strip() for ln in lst.read_text().splitlines()]
            out.extend(find_videos([ln for ln in lines if ln and not ln.startswith("#")], recursive))
            continue
        p = Path(raw)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for f in sorted(files):
                    if Path(f).suffix.lower() in VIDEO_EXTENSIONS:
                        out.append(str(Path(root) / f))
                if not recursive:
                    break
        else:
            out.append(raw)  # a missing or bad file becomes an error row, not a crash
    seen = set()
    uniq = []
    for p in out:
        if p not in seen:
            seen.add(p)
            uniq.append(p)
    return uniq
