"""NVDEC decode (PyNvVideoCodec): a video's frames as uint8 BGR CUDA tensors, by the CPU path's colour rule.

`iter_frames_nvdec`: one SimpleDecoder (one NVDEC session) per video. `iter_frames_nvdec_split` (`--split K` on
CUDA): the video as K key-frame ranges, one NVDEC session each, decoding in parallel threads, the frames handed
on in presentation order with their true indices: the ranges and the sampled frames are planned from the
packets (split_decode.read_timeline / sampled_frames, the same plan as the CPU split), and every frame's
timestamp is checked against its index; anything that could give a wrong or missing frame falls back to one
session with a log line, resuming after the frames already handed on.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Iterator, List, Optional, Tuple

from .. import spec
from .decode import DecodeStats, VideoInfo
from .gpu_colours import nv12_to_bgr, split_nv12, upright_batch
from .sampling import SamplePolicy
from .split_decode import (Range, SplitFallback, Timeline, _next_item, _put_last, parse_split, plan_ranges,
                           read_timeline, sampled_frames)

log = logging.getLogger(__name__)


def nvdec_status() -> Tuple[bool, str]:
    """(usable, why): can NVDEC decode here? PyNvVideoCodec must import (it loads the NVIDIA driver's
    libnvcuvid at import, so it fails where no driver is) and torch must see a CUDA device."""
    try:
        import PyNvVideoCodec as nvc
    except ModuleNotFoundError:
        return False, "PyNvVideoCodec is not installed (pip install 'dfserve[gpu]' or pynvvideocodec==2.2.4)"
    except Exception as exc:  # noqa: BLE001 - it fails to import where no NVIDIA driver is
        return False, f"PyNvVideoCodec does not import ({type(exc).__name__}: {exc}); it needs an NVIDIA driver"
    try:
        import torch
    except Exception:  # noqa: BLE001
        return False, "torch is not installed: frames decoded by NVDEC are handed to torch through DLPack"
    if not torch.cuda.is_available():
        return False, "torch.cuda.is_available() is False (no GPU, or a CPU build of torch)"
    return True, f"PyNvVideoCodec {getattr(nvc, '__version__', '?')} with CUDA device 0"


def nvdec_available() -> bool:
    return nvdec_status()[0]


def _frames_to_bgr_batch(frames, colors: str = "seed", height: int = 0, bits: int = 8, full_range: bool = False):
    """PyNvVideoCodec 2.2's SimpleDecoder returns a *list* of DecodedFrame (no batched surface exists in
    its API: see SimpleDecoder.get_batch_frames, "DecodedFrame[]"). Each one is a zero-copy DLPack view
    of device memory; one stack copies them into a batch we own.

    colors "seed": the frames are NVDEC's native surfaces (NV12, or P016 for 10/12-bit: [H*3/2, W]) and
    gpu_colours.nv12_to_bgr converts them by the CPU path's rule (frame_colours). colors "stream": they are
    NVDEC's own RGB conversion ([H,W,3] RGB, the stream's matrix); one flip gives BGR."""
    import torch

    if colors == "stream":
        rgb = torch.stack([torch.from_dlpack(f) for f in frames])  # [B,H,W,3] RGB uint8 on the GPU
        return rgb.flip(-1)  # BGR, as OpenCV gives it (the seed's channel order); flip returns a new tensor
    surf = torch.stack([torch.from_dlpack(f) for f in frames])
    if surf.dim() == 4:  # some builds expose [H*3/2, W, 1]
        surf = surf[..., 0]
    y, uv = split_nv12(surf, height)
    return nv12_to_bgr(y, uv, bits=bits, full_range=full_range, msb_aligned=bits > 8)


def _stream_format(path: str):
    """(bit depth, full range, display rotation) of the video stream as the CPU path reads them: the pixel
    format, and the first frame's display matrix (one frame decoded on the CPU)."""
    import av

    with av.open(path) as c:
        vs = c.streams.video[0]
        fmt = vs.codec_context.format
        bits, full = (8, False) if fmt is None else (fmt.components[0].bits, fmt.name.startswith("yuvj"))
        try:
            rot = next(c.decode(vs)).rotation or 0
        except (StopIteration, av.FFmpegError):
            rot = 0
        return bits, full, int(rot)


def iter_frames_nvdec(path: str, policy: SamplePolicy, info: VideoInfo, stats: DecodeStats, chunk: int = 16,
                      gpu_id: int = 0, colors: str = "seed", guard=None) -> Iterator[Tuple[List[int], "object"]]:
    """Decode with NVDEC (PyNvVideoCodec SimpleDecoder); yield (indices, uint8 BGR [B,H,W,3] CUDA tensor).

    One SimpleDecoder, hence one NVDEC session, per video: the scorer's decode workers decode several
    videos at once, each on its own session. `--split` does not apply here (a video is one session; the
    PyAV paths split: split_decode.py). 'all' decodes sequential batches (get_batch_frames); sparse
    policies fetch only the frames they keep by index (get_batch_frames_by_index), which lets the
    decoder seek to the nearest key frame instead of decoding everything.

    The decoder's frames are its own buffers: the batch copy made from them is finished (a CUDA event
    on this thread's stream) before the decoder is asked for more, and the frames are referenced until
    then, so a later decode can never overwrite pixels still being copied.
    """
    import PyNvVideoCodec as nvc
    import torch

    from ..errors import VideoError

    native = colors != "stream"
    bits, full_range, rotation = _stream_format(path)
    if not native:
        bits, full_range = 8, False
    coded_height = info.height
    try:
        dec = nvc.SimpleDecoder(path, gpu_id=gpu_id, use_device_memory=True,
                                output_color_type=nvc.OutputColorType.NATIVE if native else nvc.OutputColorType.RGB)
    except Exception as exc:  # noqa: BLE001
        raise VideoError(f"{path}: NVDEC cannot decode this video ({exc})") from exc
    total = len(dec)
    n = total if info.n_frames is None else info.n_frames
    stats.frames_decoded = 0
    pending = None  # (event, frames) of the previous batch

    def settle():
        nonlocal pending
        if pending is not None:
            pending[0].synchronize()
            pending = None

    def batch(frames):
        nonlocal pending
        with torch.cuda.device(gpu_id):
            out = upright_batch(_frames_to_bgr_batch(frames, colors, coded_height, bits, full_range), rotation)
            ev = torch.cuda.Event()
            ev.record()
        pending = (ev, frames)
        info.rotation = rotation
        info.height, info.width = out.shape[1], out.shape[2]  # upright, as the CPU path records it
        return out

    try:
        if policy.kind == "all":  # sequential: decode in batches, no seeking
            i = 0
            while True:
                settle()
                # never ask past the end the decoder knows: there it prints a warning per missing index
                # on stdout (where `dfserve score` writes its rows); a shorter stream just returns less
                want = chunk if total <= 0 else min(chunk, total - i)
                if want <= 0:
                    break
                try:
                    frames = dec.get_batch_frames(want)
                except Exception as exc:  # noqa: BLE001
                    if i == 0:
                        raise VideoError(f"{path}: corrupt video, NVDEC decoded no frame ({exc})") from exc
                    stats.warning = f"decoding stopped after frame {i - 1}: {exc}"
                    return
                if not frames:
                    break
                idx = list(range(i, i + len(frames)))
                i += len(frames)
                stats.frames_decoded = i
                if guard is not None:  # the request's limits (limits.py), on the frames this batch decoded
                    guard(i, info.width, info.height)
                yield idx, batch(frames)
            if i == 0:
                raise VideoError(f"{path}: no frame could be decoded (truncated or corrupt video)")
            return
        # sparse policies: fetch by index (the decoder seeks). SimpleDecoder drops indices outside
        # [0, len) with a warning and returns the rest, so ask only for those.
        wanted = [k for k in (policy.sampler(info.fps, n).expected() or []) if 0 <= k < total]
        for start in range(0, len(wanted), chunk):
            idx = wanted[start:start + chunk]
            settle()
            try:
                frames = dec.get_batch_frames_by_index(idx)
            except Exception as exc:  # noqa: BLE001
                if stats.frames_decoded == 0:
                    raise VideoError(f"{path}: corrupt video, NVDEC decoded no frame ({exc})") from exc
                stats.warning = f"decoding stopped after frame {idx[0] - 1}: {exc}"
                return
            if len(frames) != len(idx):
                stats.warning = f"NVDEC returned {len(frames)} of the {len(idx)} frames asked for at {idx[0]}"
                idx = idx[:len(frames)]
                if not idx:
                    return
            stats.frames_decoded = idx[-1] + 1
            if guard is not None:  # seeking passes frames it need not decode: counted as decoded (conservative)
                guard(stats.frames_decoded, info.width, info.height)
            yield idx, batch(frames)
    finally:
        settle()


def _pts(frame) -> Optional[int]:
    """A decoded frame's presentation timestamp (the stream's time base), or None where the build has none."""
    get = getattr(frame, "getPTS", None)
    try:
        return int(get()) if get is not None else None
    except Exception:  # noqa: BLE001
        return None


def nvdec_ranges_wanted(split: str, timeline: Timeline, n: int) -> int:
    """How many NVDEC sessions for one video of `n` frames: `split` (a number), or `auto`:
    min(spec.NVDEC_SPLIT_AUTO, key-frame ranges, n // spec.SPLIT_MIN_FRAMES). Never more than the key frames allow."""
    possible = 1 + sum(1 for s in timeline.starts if 0 < s < n)
    if split != spec.SPLIT_AUTO:
        return min(int(split), possible)
    return max(1, min(spec.NVDEC_SPLIT_AUTO, possible, n // spec.SPLIT_MIN_FRAMES))


def iter_frames_nvdec_split(path: str, policy: SamplePolicy, info: VideoInfo, stats: DecodeStats, chunk: int = 16,
                            gpu_id: int = 0, colors: str = "seed", guard=None,
                            split: str = spec.DEFAULT_SPLIT) -> Iterator[Tuple[List[int], "object"]]:
    """`iter_frames_nvdec` with the video decoded as `split` key-frame ranges, one NVDEC session each (module
    docstring); the same (indices, BGR CUDA batch) chunks in presentation order. `stats.ranges`: the sessions used."""
    split = parse_split(split)
    one = dict(chunk=chunk, gpu_id=gpu_id, colors=colors, guard=guard)
    few = policy.kind == "first" and policy.value < 2 * spec.SPLIT_MIN_FRAMES  # the seed's first:N: not worth it
    if split == "1" or (split == spec.SPLIT_AUTO and few):
        yield from iter_frames_nvdec(path, policy, info, stats, **one)
        return
    try:
        timeline = read_timeline(path)
    except SplitFallback as exc:
        log.info("%s: split decode off, one NVDEC session: %s", path, exc)
        yield from iter_frames_nvdec(path, policy, info, stats, **one)
        return
    keep, _ = sampled_frames(policy, info, timeline)
    ranges = plan_ranges(timeline.starts, len(keep), nvdec_ranges_wanted(split, timeline, len(keep)))
    if len(ranges) == 1:
        if split != spec.SPLIT_AUTO:
            log.info("%s: split decode off, one NVDEC session: no key frame to start a second range from", path)
        yield from iter_frames_nvdec(path, policy, info, stats, **one)
        return
    done = 0  # frames decoded and handed on (or dropped by the sampler) so far, in order
    coded = (info.height, info.width, info.rotation)  # the ranges record the upright size; one session needs these
    try:
        for i, n, idx, batch in _ranges_in_order(path, info, stats, timeline, keep, ranges, chunk, gpu_id, colors):
            done = i + n
            stats.frames_decoded = done
            if guard is not None:  # the request's limits (limits.py), on the frames decoded so far
                guard(done, info.width, info.height)
            if idx:
                yield idx, batch
    except SplitFallback as exc:
        log.warning("%s: split decode fell back to one NVDEC session after frame %d: %s", path, done - 1, exc)
        stats.ranges = 1
        info.height, info.width, info.rotation = coded
        for idx, batch in iter_frames_nvdec(path, policy, info, stats, **one):
            if idx[-1] < done:
                continue
            if idx[0] < done:
                k = next(j for j, i in enumerate(idx) if i >= done)
                idx, batch = idx[k:], batch[k:]
            yield idx, batch
        return


def _ranges_in_order(path: str, info: VideoInfo, stats: DecodeStats, timeline: Timeline, keep: List[bool],
                     ranges: List[Range], chunk: int, gpu_id: int, colors: str):
    """(first index, frames decoded, kept indices, their BGR batch or None) per decoded batch, range after
    range, each range decoded by its own session in its own thread; SplitFallback when a range cannot be trusted."""
    bits, full_range, rotation = _stream_format(path)
    if colors == "stream":
        bits, full_range = 8, False
    fmt = (bits, full_range, rotation, info.height)
    frame_bytes = max(1, info.width * info.height * 3)
    depth = max(2, spec.NVDEC_SPLIT_BUFFER_MB * 2 ** 20 // (len(ranges) * chunk * frame_bytes))
    stop = threading.Event()
    queues = [queue.Queue(maxsize=depth) for _ in ranges]
    workers = [threading.Thread(target=_decode_range, name=f"dfserve-nvdec-split-{k}", daemon=True,
                                args=(path, r, timeline, keep, fmt, gpu_id, chunk, colors, q, stop))
               for k, (r, q) in enumerate(zip(ranges, queues))]
    for w in workers:
        w.start()
    stats.ranges = len(ranges)
    expected = 0
    first_offset = None
    try:
        for q, w in zip(queues, workers):
            while True:
                item = _next_item(q, w)
                if item[0] == "done":
                    break
                if item[0] == "fallback":
                    raise SplitFallback(item[1])
                _, i, n, idx, batch, offset = item
                if i != expected:  # _decode_range never does this: a last guard against a missing frame
                    raise SplitFallback(f"frame {i} came where frame {expected} was expected")
                # every range's timestamps must sit where the first range's do (decoded from the start, as one
                # session decodes): a seek that landed on another key frame shows as another offset
                first_offset = offset if first_offset is None else first_offset
                if offset != first_offset:
                    raise SplitFallback(f"frame {i}'s timestamps are {offset} from its packets', the first range's "
                                        f"{first_offset}")
                expected = i + n
                if batch is not None:
                    info.rotation = rotation
                    info.height, info.width = int(batch.shape[1]), int(batch.shape[2])
                yield i, n, idx, batch
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=5.0)


def _decode_range(path: str, rng: Range, timeline: Timeline, keep: List[bool], fmt: tuple, gpu_id: int, chunk: int,
                  colors: str, out: "queue.Queue", stop: threading.Event) -> None:
    """One range on its own NVDEC session: seek to its key frame, decode its frames in batches, check each frame's
    timestamp against its index (NVDEC's timestamps may sit a constant offset from the packets': the offset of
    the range's first frame, which the caller checks against the first range's), convert the kept ones to BGR (finished before the next batch is asked for: the
    decoder reuses its surfaces); put ("batch", first, n, kept indices, BGR or None) then ("done",), or
    ("fallback", why)."""
    import PyNvVideoCodec as nvc
    import torch

    bits, full_range, rotation, height = fmt
    where = f"range of frames {rng.first}-{rng.end - 1}"
    try:
        native = colors != "stream"
        dec = nvc.SimpleDecoder(path, gpu_id=gpu_id, use_device_memory=True,
                                output_color_type=nvc.OutputColorType.NATIVE if native else nvc.OutputColorType.RGB)
        if rng.first > 0:
            dec.seek_to_index(rng.first)
        i = rng.first
        offset = None  # NVDEC's timestamps minus the packets' (seen on an H200: -1024, the MP4's B-frame delay)
        while i < rng.end:
            if stop.is_set():
                return
            frames = dec.get_batch_frames(min(chunk, rng.end - i))
            if not frames:
                raise SplitFallback(f"{i - rng.first} of its {rng.end - rng.first} frames decoded")
            for j, f in enumerate(frames):
                p = _pts(f)
                if p is None:
                    raise SplitFallback("this PyNvVideoCodec gives no frame timestamps to check the seek by")
                if offset is None:
                    offset = p - timeline.pts[i + j]
                if p - offset != timeline.pts[i + j]:
                    raise SplitFallback(f"frame {i + j} has pts {p} - {offset}, its packets say {timeline.pts[i + j]}")
            idx = [i + j for j in range(len(frames)) if keep[i + j]]
            batch = None
            if idx:
                with torch.cuda.device(gpu_id):
                    kept = [f for j, f in enumerate(frames) if keep[i + j]]
                    batch = upright_batch(_frames_to_bgr_batch(kept, colors, height, bits, full_range), rotation)
                    torch.cuda.current_stream().synchronize()  # copied out before the decoder reuses its surfaces
            if not _put_last(out, stop, ("batch", i, len(frames), idx, batch, offset)):
                return
            i += len(frames)
        _put_last(out, stop, ("done",))
    except SplitFallback as exc:
        _put_last(out, stop, ("fallback", f"{where}: {exc}"))
    except Exception as exc:  # noqa: BLE001 - the decoder or CUDA: one session takes over
        _put_last(out, stop, ("fallback", f"{where} failed to decode ({type(exc).__name__}: {exc})"))
