"""Scoring one video through a frames model: decode here, detect/crop/classify elsewhere.

Used by the Triton `deepfake_video` model (which calls the `deepfake_frames` ensemble through BLS)
and by the gRPC client's `score --server` path (which calls it over the network). The stages
around the call — decode, sampling, which frames count, aggregation, the row — are the same
functions the embedded Scorer uses, so the rows match.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional, Tuple

import numpy as np

from ..errors import DfserveError, VideoError
from .aggregate import VideoAggregate, p_fake_per_frame
from .decode import iter_frames, probe
from .engine import ScoreOptions, VideoJob, error_dict, make_row
from .faces import faces_for_classifier

log = logging.getLogger(__name__)

# frames uint8 [B,H,W,3] -> (boxes float32 [B,4], has_face bool [B], logits float32 [B,2])
FramesFn = Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray, np.ndarray]]


def precropped_frames_fn(classify: Callable[[np.ndarray], np.ndarray]) -> FramesFn:
    """For --faces precropped: every frame is the face; only the classifier runs."""

    def fn(frames: np.ndarray):
        faces, boxes, _ = faces_for_classifier(list(frames), [None] * len(frames))
        return boxes, np.ones(len(frames), bool), classify(faces)

    return fn


class ChunkSink:
    """Where the selected per-frame logits of each chunk go: a local aggregate, or a remote one."""

    def __init__(self, head: str):
        self.agg = VideoAggregate(head)

    def add(self, logits: np.ndarray, indices: np.ndarray) -> None:
        self.agg.add(logits, indices)

    def finish(self):
        return self.agg.verdict(), self.agg.count


def score_video_frames(path: str, opts: ScoreOptions, frames_fn: FramesFn, model_id: str,
                       sink: Optional[ChunkSink] = None, display_path: Optional[str] = None) -> dict:
    """Decode `path`, run `frames_fn` on each chunk of sampled frames, aggregate, return the row."""
    job = VideoJob(display_path or path, 0)
    sink = sink or ChunkSink(opts.head)
    verdict, scored = None, 0
    try:
        job.info = probe(path, count_if_unknown=opts.sample.needs_frame_count)
        for indices, frames in iter_frames(path, opts.sample, job.info, job.stats, opts.chunk):
            for idx, batch in _same_size_runs(indices, frames):
                boxes, has_face, logits = frames_fn(batch)
                has_face = np.asarray(has_face, bool).reshape(-1)
                job.frames_sampled += len(idx)
                job.frames_with_face += int(has_face.sum())
                use = has_face if opts.no_face == "skip" else np.ones_like(has_face)
                if use.any():
                    sink.add(np.asarray(logits)[use], np.asarray(idx)[use])
                if opts.timeline:
                    pf = p_fake_per_frame(logits)
                    for k, i in enumerate(idx):
                        box = [round(float(v), 1) for v in boxes[k]] if has_face[k] else None
                        job.timeline.append([int(i), round(float(pf[k]), 6) if use[k] else None, box])
        verdict, scored = sink.finish()
    except DfserveError as exc:
        job.failed, job.error = True, error_dict(exc)
    except Exception as exc:  # noqa: BLE001 - a bad file is a row, never a crash
        log.exception("%s: scoring failed", path)
        job.failed, job.error = True, error_dict(VideoError(f"{job.path}: {type(exc).__name__}: {exc}"))
    if job.error and job.path != path:
        job.error["message"] = job.error["message"].replace(path, job.path)
    return make_row(job, opts, model_id, verdict=verdict, scored=scored)


def _same_size_runs(indices, frames):
    """Split a chunk where the frame size changes (a resolution switch mid-stream)."""
    start = 0
    for k in range(1, len(frames) + 1):
        if k == len(frames) or frames[k].shape != frames[start].shape:
            yield indices[start:k], np.stack(frames[start:k])
            start = k
