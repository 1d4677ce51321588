"""Evidence with every verdict (issue 24): the most suspicious frames, where in the face, and when.

- `EvidenceKeeper` rides along with a video's tally: it records every scored frame's p_fake (for the
  segments) and keeps the crops of only the current top-N candidates (a small heap per face track), so
  collecting evidence costs a heap push per frame and N crops of memory, whatever the video's length.
- `occlusion_heat` is computed once per video, at the end, for the N frames kept: occlusion sensitivity
  with the classifier itself, through the runtime's `classify` (onnxruntime, OpenVINO, torch, Triton's classifier
  through BLS alike), reported on a 14x14 grid of HEAT_PATCH-pixel cells. Windows of HEAT_WINDOW x HEAT_WINDOW cells
  (32x32 pixels) every HEAT_STRIDE cells (starts 0, 4, 8, 10: 16 windows) are greyed: each cell flattened to its own
  mean colour, its detail removed (flattening to the ImageNet mean colour instead, a far larger and less local
  change, made the heat unfaithful on the test crops: 6 of 10); the originals and all occluded copies of the N
  frames go through the classifier together in batches; a cell's heat is the mean, over the windows covering it, of
  how much the FAKE-minus-REAL logit margin drops when that window is greyed (positive: that region pushed the frame
  toward FAKE). Cost: spec.HEAT_PASSES = 17 classifier passes per evidence frame. Occluding every single cell (197
  passes) cost x2.3-2.7 a 10-s 720p clip's scoring time on 2 cores (benchmarks/explain_cost.py) and was no more
  faithful: 23 of 30 crops against 27 of 30 for the windows (benchmarks/heat_faithfulness.py).
- `fake_segments`: time ranges where the smoothed per-frame p_fake stays above the decision threshold.
"""
from __future__ import annotations

import base64
import heapq
import io
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import spec
from .aggregate import p_fake_per_frame
from .faces import classifier_input

# uint8 [112,112,3] BGR pixels of a crop as the scorer holds it (numpy, or a device tensor)
PixelsFn = Callable[[object], np.ndarray]
# float32 [B,3,112,112] normalised faces -> logits [B,2]
ClassifyFn = Callable[[np.ndarray], np.ndarray]


def numpy_pixels(crop) -> np.ndarray:
    return np.array(crop, dtype=np.uint8, copy=True)


@dataclass
class Candidate:
    index: int
    p_fake: float
    box: Optional[list]
    track: Optional[int]
    pixels: np.ndarray  # uint8 [112,112,3] BGR


class EvidenceKeeper:
    """Per video: every scored frame's (index, p_fake) per face track, and the N most suspicious crops."""

    def __init__(self, n: int, pixels: PixelsFn = numpy_pixels):
        self.n = int(n)
        self.pixels = pixels
        self.series: Dict[Optional[int], List[Tuple[int, float]]] = {}
        self._heaps: Dict[Optional[int], list] = {}
        self._seq = 0

    def offer(self, records: Sequence, p_fake: Sequence[float]) -> None:
        """Scored records (those that count toward the verdict) with their per-frame p_fake."""
        for r, p in zip(records, p_fake):
            p = float(p)
            self.series.setdefault(r.track, []).append((r.index, p))
            if self.n <= 0 or r.crop is None:
                continue
            heap = self._heaps.setdefault(r.track, [])
            key = (p, -r.index)  # ties: the earlier frame stays
            if len(heap) >= self.n and key <= heap[0][:2]:
                continue
            box = None if r.box is None else [round(float(v), 1) for v in r.box[:4]]
            self._seq += 1
            item = (p, -r.index, self._seq, Candidate(r.index, p, box, r.track, self.pixels(r.crop)))
            if len(heap) < self.n:
                heapq.heappush(heap, item)
            else:
                heapq.heapreplace(heap, item)

    def track_for(self, decided_by: Optional[int]) -> Optional[int]:
        """The track whose frames are the evidence: the deciding one (--faces all), else the only one."""
        if decided_by is not None or not self.series:
            return decided_by
        return next(iter(self.series))

    def candidates(self, track: Optional[int]) -> List[Candidate]:
        """The kept frames of a track, most suspicious first."""
        return [c for *_, c in sorted(self._heaps.get(track, []), key=lambda t: (-t[0], -t[1]))]

    def frames(self, track: Optional[int]) -> List[Tuple[int, float]]:
        return sorted(self.series.get(track, []))


def p_fake_of(logits: np.ndarray) -> np.ndarray:
    return p_fake_per_frame(np.asarray(logits).reshape(-1, spec.NUM_CLASSES))


def fake_margin(logits: np.ndarray) -> np.ndarray:
    """The FAKE-minus-REAL logit margin (the log-odds of FAKE) of logits [B,2]."""
    z = np.asarray(logits, np.float64).reshape(-1, spec.NUM_CLASSES)
    return z[:, spec.CLASS_FAKE] - z[:, spec.CLASS_REAL]


def grey_cell(x: np.ndarray, i: int, j: int, patch: int = spec.HEAT_PATCH) -> None:
    """In place: grid cell (i, j) of normalised faces x [...,3,112,112] flattened to its own mean colour."""
    cell = x[..., i * patch:(i + 1) * patch, j * patch:(j + 1) * patch]
    cell[...] = cell.mean(axis=(-1, -2), keepdims=True)


def occlude(x: np.ndarray, cells: Sequence[Tuple[int, int]], patch: int = spec.HEAT_PATCH) -> np.ndarray:
    """A copy of normalised faces x [...,3,112,112] with the given (row, col) grid cells greyed (`grey_cell`)."""
    out = np.array(x, copy=True)
    for i, j in cells:
        grey_cell(out, i, j, patch)
    return out


def window_starts(grid: int = spec.HEAT_GRID, window: int = spec.HEAT_WINDOW, stride: int = spec.HEAT_STRIDE) -> list:
    """First cells of the occlusion windows along one side: every `stride` cells, the last clamped to the edge."""
    return sorted({*range(0, grid - window + 1, stride), grid - window})


def occlusion_windows(grid: int = spec.HEAT_GRID, window: int = spec.HEAT_WINDOW,
                      stride: int = spec.HEAT_STRIDE) -> List[List[Tuple[int, int]]]:
    """The occlusion windows, each the list of its (row, col) grid cells."""
    st = window_starts(grid, window, stride)
    return [[(i, j) for i in range(a, a + window) for j in range(b, b + window)] for a in st for b in st]


def occlusion_heat(classify: ClassifyFn, crops_uint8: np.ndarray, patch: int = spec.HEAT_PATCH,
                   window: Optional[int] = None, stride: Optional[int] = None,
                   batch: int = spec.HEAT_BATCH) -> np.ndarray:
    """Occlusion-sensitivity heat of uint8 BGR crops [K,112,112,3] -> float32 [K,g,g], g = 112 // patch.

    Each window of `window` x `window` cells (every `stride` cells; defaults spec.HEAT_WINDOW, spec.HEAT_STRIDE, read
    at call time) is greyed (`occlude`); heat[k, i, j] is the mean over the windows covering cell (i, j) of
    margin(crop k) - margin(crop k with that window greyed): how much that region pushed the frame's FAKE-minus-REAL
    logit margin up. The original and occluded copies of all K crops go through `classify` together, at most `batch`
    copies per call (the runtime splits them into its own batches), so memory stays bounded whatever K."""
    g = spec.FACE_SIZE // patch
    wins = occlusion_windows(g, spec.HEAT_WINDOW if window is None else window,
                             spec.HEAT_STRIDE if stride is None else stride)
    cover = np.zeros((len(wins), g * g), np.float64)  # window -> the cells it covers, as mean weights
    for w, cells in enumerate(wins):
        for i, j in cells:
            cover[w, i * g + j] = 1.0
    cover /= cover.sum(axis=0, keepdims=True)
    x = classifier_input(np.asarray(crops_uint8, np.uint8).reshape(-1, spec.FACE_SIZE, spec.FACE_SIZE, 3))
    per = len(wins) + 1
    step = max(1, batch // per)  # crops per classify call
    out = np.zeros((len(x), g, g), np.float32)
    for k0 in range(0, len(x), step):
        xs = x[k0:k0 + step]
        copies = np.repeat(xs, per, axis=0)
        for k in range(len(xs)):
            for w, cells in enumerate(wins):
                for i, j in cells:
                    grey_cell(copies[k * per + 1 + w], i, j, patch)
        m = fake_margin(classify(copies)).reshape(len(xs), per)
        drop = m[:, :1] - m[:, 1:]  # [k, windows]
        out[k0:k0 + len(xs)] = (drop @ cover).reshape(len(xs), g, g)
    return out


def png_bytes(pixels_bgr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels_bgr[..., ::-1])).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def heat_overlay(pixels_bgr: np.ndarray, heat: np.ndarray, scale: int = 2, alpha: float = 0.55):
    """A PIL RGB image: the crop (upscaled `scale` times) with the positive heat (toward FAKE) in red, the negative
    (toward REAL) in blue, each cell's opacity proportional to |heat| / max |heat|."""
    from PIL import Image

    rgb = np.asarray(pixels_bgr[..., ::-1], np.float32)
    h = np.asarray(heat, np.float32)
    top = float(np.abs(h).max()) or 1.0
    rep = spec.FACE_SIZE // h.shape[0]
    a = np.kron(np.abs(h) / top, np.ones((rep, rep), np.float32))[..., None] * alpha
    colour = np.where(np.kron(h, np.ones((rep, rep), np.float32))[..., None] >= 0,
                      np.array([230, 30, 30], np.float32), np.array([30, 90, 230], np.float32))
    mixed = (rgb * (1 - a) + colour * a).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(mixed)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale != 1 else img


def evidence_entries(keeper: EvidenceKeeper, track: Optional[int], fps: Optional[float],
                     classify: Optional[ClassifyFn]) -> List[dict]:
    """The row's `evidence`: the kept frames of `track`, most suspicious first, each with its crop as base64 PNG
    and, when `classify` is given, its occlusion heat (14x14, logit-margin units, 3 decimals)."""
    cands = keeper.candidates(track)
    if not cands:
        return []
    heat = occlusion_heat(classify, np.stack([c.pixels for c in cands])) if classify is not None else None
    out = []
    for k, c in enumerate(cands):
        e = {"frame": c.index, "time_s": round(c.index / fps, 3) if fps else None, "p_fake": round(c.p_fake, 6),
             "box": c.box}
        if c.track is not None:
            e["track"] = c.track
        e["png_base64"] = base64.b64encode(png_bytes(c.pixels)).decode("ascii")
        if heat is not None:
            e["heat"] = np.round(heat[k].astype(np.float64), 3).tolist()
        out.append(e)
    return out


def smooth(p: Sequence[float], width: int = spec.SEGMENT_SMOOTH_FRAMES) -> np.ndarray:
    """Centred moving mean over `width` values (fewer at the ends)."""
    p = np.asarray(p, np.float64)
    if len(p) == 0 or width <= 1:
        return p
    half = width // 2
    c = np.concatenate([[0.0], np.cumsum(p)])
    lo = np.clip(np.arange(len(p)) - half, 0, len(p))
    hi = np.clip(np.arange(len(p)) + half + 1, 0, len(p))
    return (c[hi] - c[lo]) / (hi - lo)


def fake_segments(frames: Sequence[Tuple[int, float]], fps: Optional[float],
                  threshold: float = spec.FAKE_THRESHOLD, width: int = spec.SEGMENT_SMOOTH_FRAMES) -> List[dict]:
    """Runs of scored frames (index, p_fake), in frame order, whose smoothed p_fake stays above `threshold`:
    [{start_s, end_s, first_frame, last_frame, frames, mean_p_fake}]. end_s is the end of the last frame
    (index + 1) / fps; times are None when the fps is unknown."""
    frames = sorted(frames)
    if not frames:
        return []
    idx = [i for i, _ in frames]
    raw = np.array([p for _, p in frames], np.float64)
    above = smooth(raw, width) > threshold
    out = []
    k = 0
    while k < len(frames):
        if not above[k]:
            k += 1
            continue
        e = k
        while e + 1 < len(frames) and above[e + 1]:
            e += 1
        out.append({"start_s": round(idx[k] / fps, 3) if fps else None,
                    "end_s": round((idx[e] + 1) / fps, 3) if fps else None,
                    "first_frame": idx[k], "last_frame": idx[e], "frames": e - k + 1,
                    "mean_p_fake": round(float(raw[k:e + 1].mean()), 6)})
        k = e + 1
    return out
