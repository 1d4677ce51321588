"""Scoring one video through a fused frames model: decode here, detect/crop/classify elsewhere.

Used by the Triton `deepfake_video` model (which calls the `deepfake_frames` ensemble through BLS)
and by `dfserve score --server` (which calls it over gRPC). With `explain` (evidence frames), faces are
cropped here and the heat's occlusion passes go through the same `classify_fn` (Triton's `frame_classifier`). Decode, sampling, the chunk core
(`chunk.py`: size splits, which frames count, verdict, timeline) and the row are the embedded
Scorer's own, so the rows match.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import DfserveError, RequestLimitError, UsageError, VideoError
from .chunk import FrameRecord, records_from_faces, records_from_outputs, score_chunk
from .decode import FrameGuard, iter_frames, probe
from .engine import ScoreOptions, VideoJob, error_dict, expected_frames, make_row, new_tally, new_tracker
from .faces import classifier_input, crop_faces, detector_input, faces_for_classifier, faces_per_frame

log = logging.getLogger(__name__)

# frames uint8 [B,H,W,3] (one size) -> (boxes float32 [B,4], has_face bool [B], logits float32 [B,2])
FramesFn = Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray, np.ndarray]]
# images float32 [B,3,h,w] -> (loc [B,A,4], scores [B,A]);  faces float32 [N,3,112,112] -> logits [N,2]
DetectFn = Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray, np.ndarray]]  # images -> loc, scores, landmarks
ClassifyFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class FramesModels:
    """The remote models one video is scored with: the fused frames model (largest face per frame), and
    the detector and classifier on their own (pre-cropped videos; every face with --faces all)."""

    frames_fn: Optional[FramesFn] = None
    detect_fn: Optional[DetectFn] = None
    classify_fn: Optional[ClassifyFn] = None

    def stage(self, opts: ScoreOptions, tracker=None):
        """The chunk-core stage for `opts`. With `explain`, the faces are cropped here (detector and classifier on
        their own, as for --faces all; the fused frames model returns no crops), so that the evidence frames' crops
        are kept and their heat computed with `classify_fn`."""
        if opts.explain and (self.classify_fn is None or (self.detect_fn is None and opts.faces != "precropped")):
            raise UsageError(f"explain={opts.explain}: evidence needs the detector and classifier models on their own "
                             "(deepfake_video, `dfserve score` with or without --server, `dfserve web`)")
        if opts.faces == "precropped":
            if opts.explain:
                return precropped_stage(self.classify_fn)
            return frames_stage(precropped_frames_fn(self.classify_fn))
        if opts.faces == "all" or opts.explain:
            return detect_classify_stage(self.detect_fn, self.classify_fn, opts, tracker, keep_crops=bool(opts.explain))
        return frames_stage(self.frames_fn)


def precropped_frames_fn(classify: ClassifyFn) -> FramesFn:
    """For --faces precropped: every frame is the face; only the classifier runs."""

    def fn(frames: np.ndarray):
        faces, _, _ = faces_for_classifier(list(frames), [None] * len(frames))
        return np.zeros((len(frames), 4), np.float32), np.ones(len(frames), bool), classify(faces)

    return fn


def precropped_stage(classify: ClassifyFn) -> Callable[[Sequence[int], object], List[FrameRecord]]:
    """--faces precropped with --explain: `precropped_frames_fn`'s records, each keeping its uint8 crop."""

    def stage(indices, frames):
        frames = list(frames)
        crops = crop_faces(frames, [None] * len(frames))
        recs = records_from_outputs(indices, np.zeros((len(frames), 4), np.float32), np.ones(len(frames), bool),
                                    classify(classifier_input(crops)))
        for r, c in zip(recs, crops):
            r.crop = c
        return recs

    return stage


def frames_stage(frames_fn: FramesFn) -> Callable[[Sequence[int], object], List[FrameRecord]]:
    """A chunk-core stage from a fused frames model."""

    def stage(indices, frames):
        batch = np.stack(frames) if isinstance(frames, (list, tuple)) else frames
        return records_from_outputs(indices, *frames_fn(batch))

    return stage


def detect_classify_stage(detect_fn: DetectFn, classify_fn: ClassifyFn, opts: ScoreOptions, tracker=None,
                          keep_crops: bool = False):
    """A chunk-core stage from a detector and a classifier: every face (--faces all) or the largest. With
    `keep_crops` (--explain) each record keeps its uint8 crop for the evidence keeper."""

    def stage(indices, frames):
        frames = list(frames)
        x, scale = detector_input(frames, opts.detect_max_side)
        loc, scores, lm = detect_fn(x)
        faces = faces_per_frame(loc, scores, x.shape[2], x.shape[3], scale, opts.detect_threshold, opts.faces,
                                opts.min_face, opts.box, lm)
        recs, todo = records_from_faces(indices, faces, opts.no_face, tracker)
        if todo:
            crops = crop_faces([frames[k] for _, k in todo], [r.box for r, _ in todo], opts.margin)
            logits = np.asarray(classify_fn(classifier_input(crops)), np.float32).reshape(len(todo), -1)
            if not np.isfinite(logits).all():
                raise ValueError("the classifier returned non-finite logits")
            for (r, _), z, c in zip(todo, logits, crops):
                r.logits = z
                if keep_crops:
                    r.crop = c
        return recs

    return stage


def score_video_frames(path: str, opts: ScoreOptions, models: FramesModels, model_id: str,
                       sink=None, display_path: Optional[str] = None, on_progress=None,
                       guard: Optional[FrameGuard] = None) -> dict:
    """Decode `path`, run the models on each same-size run of sampled frames, tally, return the row.

    `guard` checks every decoded frame (a request's limits); its RequestLimitError is raised, not
    turned into a row: the request is refused, the file is not at fault."""
    job = VideoJob(display_path or path, 0)
    job.tally = new_tally(opts, sink if opts.faces != "all" else None)
    stage = models.stage(opts, new_tracker(opts))
    try:
        job.info = probe(path, count_if_unknown=opts.sample.needs_frame_count)
        job.expected = expected_frames(opts, job.info)
        for indices, frames in iter_frames(path, opts.sample, job.info, job.stats, opts.chunk, guard=guard,
                                              colors=opts.colors):
            score_chunk(indices, frames, stage, job.tally)
            if on_progress is not None:
                on_progress(job.path, job.tally.frames_sampled, job.expected)
    except RequestLimitError:
        raise
    except DfserveError as exc:
        job.fail(exc)
    except Exception as exc:  # noqa: BLE001 - a bad file is a row, never a crash
        log.exception("%s: scoring failed", path)
        job.failed, job.error = True, error_dict(VideoError(f"{job.path}: {type(exc).__name__}: {exc}"))
    if job.error and job.path != path:
        job.error["message"] = job.error["message"].replace(path, job.path)
    return make_row(job, opts, model_id, classify=models.classify_fn if opts.explain else None)
