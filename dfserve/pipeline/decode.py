"""Video decoding on the CPU with PyAV (FFmpeg). Frames come out as BGR uint8, as OpenCV gives them: colours by
pipeline/frame_colours.py (`colors="seed"`, the default: BT.601 whatever the stream's tags, as the seed's OpenCV).

Frames are turned upright by the stream's display matrix (a portrait phone clip stored landscape with a
rotation), as OpenCV does by default (CAP_PROP_ORIENTATION_AUTO). Any codec and container this FFmpeg
build decodes is accepted (H.264, HEVC 8/10-bit, VP9, AV1, MPEG-4, MJPEG, ... in MP4, MOV, MKV, WebM,
AVI, ...), and animated GIFs.

Every failure becomes a VideoError naming the file and the problem: missing, unreadable, empty, a
folder, a still image, not a video, corrupt, absurd declared size or duration, decoding over its time
budget. A stream that breaks part-way yields the frames decoded so far and records the problem in
`DecodeStats.warning` (the verdict then covers those frames).
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np

from .. import spec
from ..errors import UsageError, VideoError
from .frame_colours import check_colors, frame_to_bgr
from .sampling import SamplePolicy

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".flv", ".wmv",
                    ".3gp", ".hevc", ".h264", ".265", ".264", ".gif", ".m2ts", ".mts", ".ogv", ".y4m", ".mxf"}
MAX_SIDE = 8192  # pixels; larger frames are refused as absurd
MAX_PIXELS = 8192 * 4320
MAX_DURATION_S = 7 * 24 * 3600.0  # a declared duration beyond a week is a corrupt or hostile header
MAX_FRAMES = 100_000_000  # a declared frame count beyond this (a week at 165 fps) likewise
# Decoding time budget per file (seconds of decoding, not counting the time the pipeline spends on the
# frames): generous for any real video (decoding runs at many times real time), finite for a hostile one.
# DFSERVE_DECODE_TIMEOUT_S sets a fixed budget instead.
DECODE_BUDGET_MIN_S = 120.0
DECODE_BUDGET_PER_VIDEO_S = 2.0  # per second of (declared) video
DECODE_BUDGET_PER_MB = 2.0  # per MB of file, for streams that declare no duration
IO_TIMEOUT_S = 60.0  # one open / read call of FFmpeg (interrupt callback)
# Container formats that are still images, and image codecs whose one-frame streams are not videos.
IMAGE_FORMATS = {"image2", "image2pipe"}
# Containers with no frame index whose timestamps may restart part-way (concatenated MPEG-TS / PS recordings:
# each segment starts its clock again), so their declared duration covers the first segment only: probe
# counts their video packets, always.
COUNTED_FORMATS = {"mpegts", "mpeg"}
# What FFmpeg may do with a file it is given: read that one file (no other protocol: no http, no
# playlists pointing elsewhere) through container demuxers of real video files, and the single-image
# demuxers (so a still image is recognised and refused by name). Playlists (hls, dash), concat,
# image sequences (image2: a file-name pattern), tee, subtitles-as-video and the like are refused,
# so a crafted "video" can never make the engine (or the server, for bytes it was sent) read another file.
DEMUXER_WHITELIST = ",".join([
    "mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "mpegts", "mpeg", "flv", "asf",
    "h264", "hevc", "m4v", "mpegvideo", "ivf", "obu", "yuv4mpegpipe", "gif", "apng", "webp_pipe", "gif_pipe",
    "png_pipe", "jpeg_pipe", "bmp_pipe", "tiff_pipe", "ogg", "dv", "nut", "rawvideo"])
PROTOCOL_WHITELIST = "file"
ANIMATABLE_FORMATS = {"gif", "apng", "webp", "webp_pipe"}
IMAGE_CODECS = {"png", "apng", "mjpeg", "jpeg2000", "jpegls", "jpegxl", "bmp", "tiff", "webp", "gif", "qoi", "pam",
                "pgm", "ppm", "pbm", "pgmyuv", "sgi", "sunrast", "targa", "xbm", "xpm", "xwd", "pcx", "dds", "exr",
                "hdr", "psd", "photocd", "pictor", "vbn", "ljpeg"}

# A check run on every decoded frame: (frames decoded so far, frame width, frame height) -> None; it raises
# (a DfserveError) to stop decoding. `iter_frames(guard=)` takes one (e.g. `limits.RequestGuard`).
FrameGuard = Callable[[int, int, int], None]


@dataclass
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float
    n_frames: Optional[int]  # from the container, or counted; None if unknown
    duration_s: Optional[float]
    codec: str
    rotation: int = 0  # degrees counterclockwise from the display matrix, applied to the frames
    container: str = ""
    frames_declared: Optional[int] = None  # the frame count the container's index states (mp4/mov/mkv...)


@dataclass
class DecodeStats:
    frames_decoded: int = 0
    warning: Optional[str] = None
    ranges: int = 1  # key-frame ranges decoded in parallel (split_decode.py); 1: one decoder


def _av():
    import av  # PyAV is a core dependency

    return av


def open_video(path: str):
    """The file opened by PyAV with the demuxer / protocol whitelists; every failure a VideoError naming it."""
    av = _av()
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise VideoError(f"{path}: no such file (missing, or removed before it was read)") from None
    except OSError as exc:
        raise VideoError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if p.is_dir():
        raise VideoError(f"{path}: is a folder, not a video file")
    if st.st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    if not os.access(p, os.R_OK):
        raise VideoError(f"{path}: not readable (permission denied)")
    try:
        container = av.open(str(p), mode="r", timeout=(IO_TIMEOUT_S, IO_TIMEOUT_S),
                            options={"format_whitelist": DEMUXER_WHITELIST, "protocol_whitelist": PROTOCOL_WHITELIST})
    except FileNotFoundError:
        raise VideoError(f"{path}: no such file (removed before it was read)") from None
    except PermissionError:
        raise VideoError(f"{path}: not readable (permission denied)") from None
    except av.error.FFmpegError as exc:
        raise VideoError(f"{path}: not a readable video ({ffmsg(exc)})") from exc
    except Exception as exc:  # noqa: BLE001 - PyAV may raise plain OSError/ValueError on odd files
        raise VideoError(f"{path}: cannot be opened as a video ({type(exc).__name__}: {exc})") from exc
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video stream (is it an audio or image file?)")
    return container


def _still_image(path: str, container, vs) -> Optional[str]:
    """A description if the file is a still image (PNG/JPEG/one-frame GIF...) rather than a video."""
    fmt = (container.format.name or "").split(",")[0]
    codec = vs.codec_context.name or "?"
    kind = {"mjpeg": "JPEG"}.get(codec, codec.upper())
    if fmt in IMAGE_FORMATS or (fmt.endswith("_pipe") and fmt not in ANIMATABLE_FORMATS):
        return f"{kind} image"
    if fmt in ANIMATABLE_FORMATS or (codec in IMAGE_CODECS and (vs.frames or 0) <= 1
                                     and fmt not in ("avi", "matroska", "mov")):
        n = 0
        for pkt in container.demux(vs):  # count up to 2 frames: animated or not
            if pkt.size:
                n += 1
                if n >= 2:
                    break
        if n < 2:
            return f"{kind} image, one frame" if fmt in ANIMATABLE_FORMATS else f"{kind} image"
    return None


class DecodeBudget:
    """Wall-clock time budget for decoding one file, counting only the time spent decoding."""

    def __init__(self, path: str, duration_s: Optional[float] = None, size_bytes: int = 0):
        self.path = path
        env = os.environ.get("DFSERVE_DECODE_TIMEOUT_S")
        if env:
            self.limit = float(env)
        else:
            self.limit = max(DECODE_BUDGET_MIN_S, DECODE_BUDGET_PER_VIDEO_S * min(duration_s or 0.0, MAX_DURATION_S),
                             DECODE_BUDGET_PER_MB * size_bytes / 1e6)
        self.used = 0.0
        self._t = None

    def start(self) -> None:
        self._t = time.perf_counter()

    def pause(self) -> None:
        if self._t is not None:
            self.used += time.perf_counter() - self._t
            self._t = None

    def check(self, frames: int) -> None:
        used = self.used + (time.perf_counter() - self._t if self._t is not None else 0.0)
        if used > self.limit:
            raise VideoError(f"{self.path}: decoding took longer than its time budget ({used:.1f} s > {self.limit:.1f} s "
                             f"after {frames} frames): a hostile or pathological file "
                             "(DFSERVE_DECODE_TIMEOUT_S sets the budget)")


def check_frame_size(path: str, index: int, width: int, height: int) -> None:
    """Refuse an absurd (or empty) frame size: a corrupt or hostile stream."""
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS or width <= 0 or height <= 0:
        raise VideoError(f"{path}: absurd frame size {width}x{height} at frame {index} (at most {MAX_SIDE} "
                         f"per side and {MAX_PIXELS} pixels)")


def frame_checks(path: str, budget: DecodeBudget, guard: Optional[FrameGuard] = None) -> FrameGuard:
    """What every decoded frame passes: the time budget and the size check, then the caller's guard."""

    def check(frames: int, width: int, height: int) -> None:
        budget.check(frames)
        check_frame_size(path, frames - 1, width, height)
        if guard is not None:
            guard(frames, width, height)

    return check


def ffmsg(exc) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def probe(path: str, count_if_unknown: bool = False) -> VideoInfo:
    """Read the stream's geometry, frame rate and frame count (counting packets if asked and unknown).

    Refuses still images, absurd declared sizes / durations / frame counts before anything is decoded.
    """
    container = open_video(path)
    try:
        vs = container.streams.video[0]
        cc = vs.codec_context
        if cc is None:
            raise VideoError(f"{path}: its video stream has an unknown codec or no decoder in this FFmpeg build "
                             "(corrupt header, or an unsupported format)")
        w, h = int(cc.width or 0), int(cc.height or 0)
        if w <= 0 or h <= 0:
            raise VideoError(f"{path}: video stream has no valid frame size ({w}x{h})")
        if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
            raise VideoError(f"{path}: absurd frame size {w}x{h} (at most {MAX_SIDE} per side and "
                             f"{MAX_PIXELS} pixels)")
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        fps = float(rate) if rate else 0.0
        if not math.isfinite(fps) or fps < 0:
            fps = 0.0
        duration = None
        if vs.duration is not None and vs.time_base is not None:
            duration = float(vs.duration * vs.time_base)
        elif container.duration:
            duration = container.duration / 1_000_000
        if duration is not None and (not math.isfinite(duration) or duration > MAX_DURATION_S):
            raise VideoError(f"{path}: declares an absurd duration of {duration:.3g} s (at most {MAX_DURATION_S:.0f} s): "
                             "a corrupt or hostile header")
        if duration is not None and duration < 0:
            duration = None
        n = int(vs.frames) if vs.frames else None
        if n is not None and n > MAX_FRAMES:
            raise VideoError(f"{path}: declares an absurd frame count of {n} (at most {MAX_FRAMES}): "
                             "a corrupt or hostile header")
        still = _still_image(path, container, vs)
        if still:
            raise VideoError(f"{path}: a still image, not a video ({still}); dfserve scores videos")
        fmt = (container.format.name or "").split(",")[0]
        if n is None and (count_if_unknown or fmt in COUNTED_FORMATS):
            n = _count_packets(path, duration)
            if fmt in COUNTED_FORMATS and n and fps and (duration is None or n / fps > duration * 1.1):
                duration = n / fps  # the timestamps restarted (concatenated segments): the frames tell the length
        if n is None and duration and fps:
            n = int(round(duration * fps))
            if n > MAX_FRAMES:
                raise VideoError(f"{path}: declares {duration:.3g} s at {fps:.3g} fps, an absurd {n} frames "
                                 f"(at most {MAX_FRAMES}): a corrupt or hostile header")
        return VideoInfo(str(path), w, h, fps, n, duration, cc.name, 0, fmt,
                         int(vs.frames) if vs.frames else None)
    finally:
        container.close()


def _count_packets(path: str, duration: Optional[float]) -> int:
    """Count the video packets (frames) of a file that declares no frame count, within the time budget."""
    budget = DecodeBudget(str(path), duration, Path(path).stat().st_size)
    budget.start()
    container = open_video(path)
    n = 0
    try:
        for pkt in container.demux(container.streams.video[0]):
            if pkt.size:
                n += 1
                if n % 256 == 0:
                    budget.check(0)
    except _av().error.FFmpegError:
        log.debug("%s: packet count stopped at a broken tail after %d packets", path, n)
    finally:
        container.close()
    return n


def frame_time(frame):
    """Presentation time of a frame in seconds as an exact Fraction, or None."""
    if frame.pts is None or frame.time_base is None:
        return None
    return frame.pts * frame.time_base


def upright(arr: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display matrix rotation (degrees counterclockwise, multiples of 90) as players do."""
    k = int(round(rotation / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(arr, k)) if k else arr


# What a decoder makes of each kept frame: (PyAV frame, colour rule, display rotation) -> an array-like whose
# `.shape` is the upright frame's (H, W, 3). `bgr_frame` by default; a device scorer may keep the decoded planes
# and convert them on its device (pipeline/frame_planes.py).
FrameForm = Callable[[object, str, int], object]


def bgr_frame(frame, colors: str, rotation: int) -> np.ndarray:
    """The default FrameForm: upright BGR uint8 [H,W,3] by the colour rule `colors` (frame_colours.py)."""
    return upright(frame_to_bgr(frame, colors), rotation)


DECODER_THREADS_ENV = "DFSERVE_DECODER_THREADS"


def cpu_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def decoder_threads() -> int:
    """FFmpeg threads for one decoder of the CPU path (0: FFmpeg's own choice). On 2 cores or fewer, one: the
    two networks already keep both cores busy, and FFmpeg's extra threads only take turns with them
    (interleaved A/B, 2-core AMD EPYC, 10-s 720p, `--sample all`, 5 rounds: OpenVINO fp32 and int8 faster with
    one decoder thread; docs/cpu-speed.md section 1b). More cores: FFmpeg's choice. `$DFSERVE_DECODER_THREADS`
    overrides (0 = FFmpeg's choice)."""
    env = os.environ.get(DECODER_THREADS_ENV, "").strip()
    if env:
        try:
            return max(0, int(env))
        except ValueError:
            raise UsageError(f"${DECODER_THREADS_ENV} must be a number of threads (0: FFmpeg's choice), "
                             f"got {env!r}") from None
    return 1 if cpu_cores() <= 2 else 0


def decoder_stream(container, path: str, threads: Optional[int] = None):
    """The container's video stream set up for decoding: FFmpeg's own threads (`threads` of them, 0: as many
    as it likes, None: `decoder_threads()`) and the decoder's pixel limit. A stream without a decoder is a
    VideoError."""
    vs = container.streams.video[0]
    if vs.codec_context is None:
        raise VideoError(f"{path}: its video stream has an unknown codec or no decoder in this FFmpeg build")
    vs.thread_type = "AUTO"
    threads = decoder_threads() if threads is None else threads
    if threads:
        vs.thread_count = threads
    vs.codec_context.options = {"max_pixels": str(MAX_PIXELS)}
    return vs


def note_truncation(path: str, info: VideoInfo, stats: DecodeStats) -> None:
    """After decoding ran to the end of the stream: warn (in `stats.warning`) when the container promised
    more frames than there were."""
    note = truncation_note(info, stats)
    if stats.warning is None and note:
        stats.warning = note
        log.warning("%s: %s", path, stats.warning)


def truncation_note(info: VideoInfo, stats: DecodeStats) -> Optional[str]:
    """What to say when fewer frames decoded than the container declares (an index at the front of the file,
    mp4 faststart, promises frames that are not there), else None."""
    declared = info.frames_declared
    if declared and stats.frames_decoded < declared - 1:
        return (f"decoded {stats.frames_decoded} of the {declared} frames the container declares: the file looks "
                "truncated; the verdict covers the frames decoded")
    return None


def iter_frames(path: str, policy: SamplePolicy, info: VideoInfo, stats: DecodeStats,
                chunk: int = 16, guard: Optional[FrameGuard] = None,
                colors: str = spec.DEFAULT_COLORS,
                form: Optional[FrameForm] = None) -> Iterator[Tuple[List[int], List[np.ndarray]]]:
    """Decode the video, yield (indices, BGR frames) chunks of the sampled frames, upright.

    `fps:R` sampling uses the frames' timestamps (variable frame rate safe). Every decoded frame, sampled
    or not, is checked (`frame_checks`): the time budget (DecodeBudget) and its size (over them, a
    VideoError names the file), then `guard` if given (a request's limits: `limits.RequestGuard`).
    `colors`: the colour rule (spec.COLORS; frame_colours.frame_to_bgr). `form`: what each kept frame becomes
    (default `bgr_frame`; see FrameForm).
    """
    check_colors(colors)
    form = form or bgr_frame
    av = _av()
    sampler = policy.sampler(info.fps, info.n_frames)
    container = open_video(path)
    try:
        size = Path(path).stat().st_size
    except OSError:
        size = 0
    budget = DecodeBudget(str(path), info.duration_s, size)
    check = frame_checks(str(path), budget, guard)
    idx_buf: List[int] = []
    frm_buf: List[np.ndarray] = []
    try:
        vs = decoder_stream(container, path)
        i = -1
        ended = True  # decoding ran to the end of the stream (not stopped by the sampling policy)
        budget.start()
        try:
            for frame in container.decode(vs):
                i += 1
                stats.frames_decoded = i + 1
                check(i + 1, frame.width, frame.height)
                if sampler.keep(i, frame_time(frame)):
                    rot = frame.rotation or 0
                    arr = form(frame, colors, rot)
                    info.rotation = rot
                    if arr.shape[1] != info.width or arr.shape[0] != info.height:
                        # rotated display, or a resolution change mid-stream: keep going with the new size
                        info.width, info.height = arr.shape[1], arr.shape[0]
                    idx_buf.append(i)
                    frm_buf.append(arr)
                    if len(idx_buf) >= chunk:
                        budget.pause()
                        yield idx_buf, frm_buf
                        budget.start()
                        idx_buf, frm_buf = [], []
                if sampler.done_after(i):
                    ended = False
                    break
        except av.error.FFmpegError as exc:
            if stats.frames_decoded == 0:
                raise VideoError(f"{path}: corrupt video, no frame could be decoded ({ffmsg(exc)})") from exc
            stats.warning = f"decoding stopped after frame {stats.frames_decoded - 1}: {ffmsg(exc)}"
            note = truncation_note(info, stats)  # e.g. a faststart mp4 cut short
            if note:
                stats.warning += f"; {note}"
            log.warning("%s: %s", path, stats.warning)
        except (MemoryError, OverflowError) as exc:
            raise VideoError(f"{path}: cannot be decoded ({type(exc).__name__}: a corrupt or hostile file)") from exc
        if stats.frames_decoded == 0:
            raise VideoError(f"{path}: no frame could be decoded (truncated or corrupt video)")
        if ended:
            note_truncation(path, info, stats)
        budget.pause()
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
