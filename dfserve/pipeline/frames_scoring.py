"""Scoring one video through a fused frames model: decode here, detect/crop/classify elsewhere.

Used by the Triton `deepfake_video` model (which calls the `deepfake_frames` ensemble through BLS)
and by `dfserve score --server` (which calls it over gRPC). Decode, sampling, the chunk core
(`chunk.py`: size splits, which frames count, verdict, timeline) and the row are the embedded
Scorer's own, so the rows match.
"""
from __future__ import annotations

import logging
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import DfserveError, VideoError
from .chunk import FrameRecord, records_from_outputs, score_chunk
from .decode import iter_frames, probe
from .engine import ScoreOptions, VideoJob, error_dict, expected_frames, make_row, new_tally
from .faces import faces_for_classifier

log = logging.getLogger(__name__)

# frames uint8 [B,H,W,3] (one size) -> (boxes float32 [B,4], has_face bool [B], logits float32 [B,2])
FramesFn = Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray, np.ndarray]]


def precropped_frames_fn(classify: Callable[[np.ndarray], np.ndarray]) -> FramesFn:
    """For --faces precropped: every frame is the face; only the classifier runs."""

    def fn(frames: np.ndarray):
        faces, _, _ = faces_for_classifier(list(frames), [None] * len(frames))
        return np.zeros((len(frames), 4), np.float32), np.ones(len(frames), bool), classify(faces)

    return fn


def frames_stage(frames_fn: FramesFn) -> Callable[[Sequence[int], object], List[FrameRecord]]:
    """A chunk-core stage from a fused frames model."""

    def stage(indices, frames):
        batch = np.stack(frames) if isinstance(frames, (list, tuple)) else frames
        return records_from_outputs(indices, *frames_fn(batch))

    return stage


def score_video_frames(path: str, opts: ScoreOptions, frames_fn: FramesFn, model_id: str,
                       sink=None, display_path: Optional[str] = None, on_progress=None) -> dict:
    """Decode `path`, run `frames_fn` on each same-size run of sampled frames, tally, return the row."""
    job = VideoJob(display_path or path, 0)
    job.tally = new_tally(opts, sink)
    stage = frames_stage(frames_fn)
    try:
        job.info = probe(path, count_if_unknown=opts.sample.needs_frame_count)
        job.expected = expected_frames(opts, job.info)
        for indices, frames in iter_frames(path, opts.sample, job.info, job.stats, opts.chunk):
            score_chunk(indices, frames, stage, job.tally)
            if on_progress is not None:
                on_progress(job.path, job.tally.frames_sampled, job.expected)
    except DfserveError as exc:
        job.fail(exc)
    except Exception as exc:  # noqa: BLE001 - a bad file is a row, never a crash
        log.exception("%s: scoring failed", path)
        job.failed, job.error = True, error_dict(VideoError(f"{job.path}: {type(exc).__name__}: {exc}"))
    if job.error and job.path != path:
        job.error["message"] = job.error["message"].replace(path, job.path)
    return make_row(job, opts, model_id)
