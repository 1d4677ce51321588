"""The one chunk-scoring core: frames of a chunk -> per-frame records -> per-video tally.

Every path through the engine goes through here: the embedded `Scorer` (numpy or torch frames),
the Triton `deepfake_video` model, the client's streaming path and `dfserve score --server`.

- `same_size_runs` splits a chunk where the frame size changes (a resolution switch mid-stream),
  so each run gets its own detector scale.
- A *stage* turns one same-size run into `FrameRecord`s: face box (or none) and, when the stage
  classifies too (the Triton ensemble), logits. The embedded engine's stage leaves `logits` empty and
  attaches the face crop; the crops of many videos are then classified in shared batches.
- `VideoTally` is the per-video bookkeeping — which frames count, the running verdict (a local
  aggregate or the server's `video_aggregator`), the counts and the timeline — written once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .aggregate import VideoAggregate, Verdict, p_fake_per_frame


@dataclass
class FrameRecord:
    """One sampled frame's face and, once classified, its logits."""

    index: int  # frame number in the video
    has_face: bool  # a face was found (always True for pre-cropped videos)
    box: Optional[np.ndarray] = None  # x1, y1, x2, y2 in frame pixels; None: no face box (whole frame)
    logits: Optional[np.ndarray] = None  # [2]; None: not (yet) classified
    crop: Any = None  # classifier input waiting for a batch (embedded engine only)
    track: Optional[int] = None  # face track id (multi-face scoring)

    @property
    def pending(self) -> bool:
        return self.crop is not None and self.logits is None


def same_size_runs(indices: Sequence[int], frames) -> Iterator[Tuple[List[int], Any]]:
    """Split a chunk where the frame size changes; yields (indices, frames) of one size each.

    `frames` is a list of arrays/tensors [H,W,3], or one batched array/tensor [B,H,W,3] (one size).
    """
    indices = list(indices)
    if not isinstance(frames, (list, tuple)):
        if len(indices):
            yield indices, frames
        return
    start = 0
    for k in range(1, len(frames) + 1):
        if k == len(frames) or tuple(frames[k].shape) != tuple(frames[start].shape):
            yield indices[start:k], frames[start:k]
            start = k


def records_from_outputs(indices: Sequence[int], boxes, has_face, logits) -> List[FrameRecord]:
    """Records from a fused frames model's outputs (boxes [B,4], has_face [B], logits [B,2])."""
    has_face = np.asarray(has_face, bool).reshape(-1)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    logits = np.asarray(logits, np.float32).reshape(-1, 2)
    n = len(indices)
    if not (len(has_face) == len(boxes) == len(logits) == n):
        raise ValueError(f"frames model returned {len(boxes)} boxes, {len(has_face)} has_face and {len(logits)} "
                         f"logits for {n} frames")
    if not np.isfinite(logits).all():
        raise ValueError("frames model returned non-finite logits")
    return [FrameRecord(int(i), bool(has_face[k]), boxes[k] if has_face[k] else None, logits[k])
            for k, i in enumerate(indices)]


def records_from_faces(indices: Sequence[int], faces: Sequence[Sequence], no_face: str = "skip",
                       tracker=None) -> Tuple[List[FrameRecord], List[Tuple[FrameRecord, int]]]:
    """Records from the faces found in each frame of a run (lists of Detection), and the records that need
    a crop, each with the position of its frame in the run.

    One record per face; a frame without a face gives one face-less record (cropped whole with
    `no_face="frame"`). With a tracker (multi-face scoring), every face gets its track id.
    """
    recs: List[FrameRecord] = []
    need: List[int] = []  # index into recs of records to crop
    pos: List[int] = []  # their frame's position in the run
    for k, (i, fs) in enumerate(zip(indices, faces)):
        tracks = tracker.update([f.box for f in fs]) if tracker is not None else [None] * len(fs)
        if not fs:
            recs.append(FrameRecord(int(i), False))
            if no_face == "frame":
                need.append(len(recs) - 1)
                pos.append(k)
            continue
        for f, t in zip(fs, tracks):
            recs.append(FrameRecord(int(i), True, f.box, track=t))
            need.append(len(recs) - 1)
            pos.append(k)
    return recs, [(recs[n], k) for n, k in zip(need, pos)]


class LocalAggregate:
    """The running verdict of one video, kept here (the server path uses `client.RemoteAggregate`)."""

    def __init__(self, head: str):
        self.agg = VideoAggregate(head)

    def add(self, logits: np.ndarray, indices: np.ndarray) -> None:
        self.agg.add(logits, indices)

    def finish(self) -> Tuple[Optional[Verdict], int]:
        return self.agg.verdict(), self.agg.count


class TrackState:
    """One person's running verdict (the seed head over that track's frames) and where it was seen."""

    __slots__ = ("id", "agg", "first_frame", "last_frame", "box_first")

    def __init__(self, track_id: int, head: str):
        self.id = track_id
        self.agg = VideoAggregate(head)
        self.first_frame = None
        self.last_frame = None
        self.box_first = None

    def add(self, recs: Sequence[FrameRecord]) -> None:
        self.agg.add(np.stack([r.logits for r in recs]), np.array([r.index for r in recs], np.int64))
        first = min(recs, key=lambda r: r.index)
        if self.first_frame is None or first.index < self.first_frame:
            self.first_frame, self.box_first = first.index, [round(float(v), 1) for v in first.box[:4]]
        last = max(r.index for r in recs)
        self.last_frame = last if self.last_frame is None else max(self.last_frame, last)


class VideoTally:
    """Per-video state fed with records: counts, the verdict sink, the timeline.

    A record counts toward the verdict when it has logits and a face — or, with `no_face="frame"`,
    any classified frame (the seed's whole-frame fallback). Records with a track id (multi-face
    scoring) go to their track; the video's verdict is then the most suspicious decisive track (max
    p_fake over tracks of at least `min_track` scored frames; all tracks if none is that long).
    """

    def __init__(self, head: str, no_face: str = "skip", timeline: bool = False, sink=None,
                 min_track: int = 1, evidence=None):
        self.head = head
        self.evidence = evidence  # an evidence.EvidenceKeeper (--explain, segments) or None
        self.no_face = no_face
        self.keep_timeline = timeline
        self.sink = sink if sink is not None else LocalAggregate(head)
        self.min_track = min_track
        self.tracks: dict = {}
        self.decided_by: Optional[int] = None
        self.frames_sampled = 0
        self.frames_with_face = 0
        self.timeline: List[list] = []

    def counts(self, rec: FrameRecord) -> bool:
        return rec.logits is not None and (rec.has_face or self.no_face == "frame")

    def add(self, records: Sequence[FrameRecord]) -> None:
        """Records of newly sampled frames (all faces of a frame come in one call): counted; those already
        classified are scored now."""
        self.frames_sampled += len({r.index for r in records})
        self.frames_with_face += len({r.index for r in records if r.has_face})
        self.scored([r for r in records if not r.pending])

    def scored(self, records: Sequence[FrameRecord]) -> None:
        """Records whose logits are now known (or that will never be classified)."""
        if not records:
            return
        used = [r for r in records if self.counts(r)]
        plain = [r for r in used if r.track is None]
        if plain:
            self.sink.add(np.stack([r.logits for r in plain]), np.array([r.index for r in plain], np.int64))
        by_track: dict = {}
        for r in used:
            if r.track is not None:
                by_track.setdefault(r.track, []).append(r)
        for t, recs in by_track.items():
            if t not in self.tracks:
                self.tracks[t] = TrackState(t, self.head)
            self.tracks[t].add(recs)
        pf = p_fake_per_frame(np.stack([r.logits for r in used])) if used and (
            self.keep_timeline or self.evidence is not None) else []
        if self.evidence is not None:
            self.evidence.offer(used, pf)
        if self.keep_timeline:
            p_of = {id(r): float(p) for r, p in zip(used, pf)}
            for r in records:
                p = p_of.get(id(r))
                entry = [r.index, None if p is None else round(p, 6),
                         None if r.box is None else [round(float(v), 1) for v in r.box[:4]]]
                if r.track is not None:
                    entry.append(r.track)
                self.timeline.append(entry)

    def finish(self) -> Tuple[Optional[Verdict], int]:
        if not self.tracks:
            return self.sink.finish()
        verdicts = {t: s.agg.verdict() for t, s in self.tracks.items()}
        decisive = [t for t, s in self.tracks.items() if s.agg.count >= self.min_track] or list(self.tracks)
        best = max(decisive, key=lambda t: (verdicts[t].p_fake, self.tracks[t].agg.count, -t))
        self.decided_by = best
        return verdicts[best], self.tracks[best].agg.count

    def faces(self) -> List[dict]:
        """Per-track summaries for the result row (multi-face scoring)."""
        out = []
        for t in sorted(self.tracks):
            s = self.tracks[t]
            v = s.agg.verdict()
            out.append({"track": t, "frames": s.agg.count, "p_fake": round(v.p_fake, 6), "label": v.label,
                        "first_frame": s.first_frame, "last_frame": s.last_frame, "box_first": s.box_first,
                        "decisive": s.agg.count >= self.min_track})
        return out

    def sorted_timeline(self) -> List[list]:
        return sorted(self.timeline, key=lambda t: (t[0], t[3] if len(t) > 3 else -1))


def score_chunk(indices: Sequence[int], frames, stage, tally: VideoTally) -> List[FrameRecord]:
    """Run `stage(indices, same-size frames) -> records` on each same-size run of a chunk and tally them."""
    out: List[FrameRecord] = []
    for idx, run in same_size_runs(indices, frames):
        recs = stage(idx, run)
        tally.add(recs)
        out.extend(recs)
    return out
