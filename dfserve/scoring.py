"""Scoring as a library: choose a scorer once (`make_scorer`) and score paths (`score_paths`).

Every front end goes through here — `dfserve score`, the demo, the web app, the Ray workers, the
bench — so the choice of runtime and the row format are made in one place.
"""
from __future__ import annotations

import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from . import spec
from .errors import UsageError
from .pipeline.limits import RequestLimits
from .pipeline.limits import from_args as limits_from_args
from .pipeline.options import ScoreOptions

log = logging.getLogger("dfserve")


@dataclass
class ScorerConfig:
    """Where a scorer's models come from and what runs them (everything but the per-video options)."""

    models: Optional[Path] = None  # folder made by `dfserve export`
    checkpoint: Optional[Path] = None  # seed checkpoint, exported on first use into the cache
    server: Optional[str] = None  # HOST:PORT of a dfserve Triton server
    device: str = "cpu"
    runtime: str = "auto"  # auto | onnxruntime | openvino | torch
    threads: int = 0  # CPU threads for the runtime (0: all cores)
    precision: str = "fp32"  # fp32 | bf16 | int8 (issue 11: variants written by `dfserve export --precision`)
    detect_every: int = 1  # issue 11: detect on every K-th sampled frame, carry boxes between (1: every frame)
    compile: bool = False  # torch runtime: torch.compile (inductor) both networks
    # per-video limits (issue 25, pipeline/limits.py): off by default for one's own files; the servers set theirs
    limits: RequestLimits = field(default_factory=RequestLimits.local)
    # a long-running server (`dfserve web`): memory before the last few % of speed (models.load_runtime `lean`)
    lean: bool = False

    def __post_init__(self):
        if isinstance(self.limits, dict):  # from dataclasses.asdict (a Ray actor's config)
            self.limits = RequestLimits(**self.limits)

    @classmethod
    def from_args(cls, args, entry: str = "local") -> "ScorerConfig":
        """`entry`: whose default limits (limits.ENTRIES: "local" for `dfserve score`, "server" for `dfserve web`)."""
        return cls(models=getattr(args, "models", None), checkpoint=getattr(args, "checkpoint", None),
                   server=getattr(args, "server", None), device=getattr(args, "device", "cpu") or "cpu",
                   runtime=getattr(args, "runtime", "auto") or "auto", threads=getattr(args, "threads", 0) or 0,
                   precision=getattr(args, "precision", "fp32") or "fp32",
                   detect_every=getattr(args, "detect_every", 1) or 1, compile=bool(getattr(args, "compile", False)),
                   limits=limits_from_args(args, entry))


def make_scorer(opts: ScoreOptions, config: ScorerConfig, share_with=None):
    """The embedded scorer (onnxruntime or torch), or the Triton-backed one with `config.server`.

    Whatever it returns has `score(paths) -> Iterator[row dict]` and `model_id`. The embedded scorers hold
    each video to `config.limits`; with `config.server` the server's own limits apply. `share_with`: an
    embedded scorer made with the same `config` whose runtime (the loaded models) the new one reuses, when the
    options allow (same classifier batch, no --detect-every): a server's scorers for several option sets then
    hold one copy of the models. Never call two scorers sharing a runtime from two threads at once.
    """
    if config.detect_every > 1 and (config.server or config.runtime == "torch" or config.device != "cpu"
                                    or opts.faces != "largest"):
        raise UsageError("--detect-every is for --faces largest on the embedded CPU runtimes (onnxruntime, openvino)")
    if opts.detector == spec.DETECTOR_DLIB:
        if config.server or config.device != "cpu" or config.runtime == "torch" or config.detect_every > 1:
            raise UsageError("--detector dlib (the seed's dlib HOG detector) runs embedded on the CPU only: drop "
                             "--server / --device cuda / --runtime torch / --detect-every")
    elif opts.box != spec.DEFAULT_BOX and config.server:
        raise UsageError(f"--box {opts.box}: the server crops with its own box convention ({spec.DEFAULT_BOX}); "
                         "drop --server to score with raw RetinaFace boxes")
    if config.server:
        if config.checkpoint or config.models:
            raise UsageError("--server scores with the server's models: drop --checkpoint / --models")
        from .client.remote import RemoteScorer

        return RemoteScorer(config.server, opts)
    shared = getattr(share_with, "rt", None)
    if shared is not None and config.detect_every == 1 and getattr(share_with.opt, "batch", None) == opts.batch:
        scorer = scorer_for(shared, opts, share_with.model_id)
        scorer.limits = config.limits
        return scorer
    from .models import load_runtime, resolve_models

    resolved = resolve_models(config.models, config.checkpoint)
    if resolved.untrained:
        log.warning("the models in %s have RANDOM, UNTRAINED weights: verdicts are meaningless", resolved.models_dir)
    rt = load_runtime(config.runtime, resolved, config.device, config.threads, opts.batch, config.checkpoint,
                      precision=config.precision, compile=config.compile, lean=config.lean)
    if config.detect_every > 1:
        from .pipeline.detect_every import DetectEveryScorer

        scorer = DetectEveryScorer(rt, opts, resolved.model_id, every=config.detect_every)
    else:
        scorer = scorer_for(rt, opts, resolved.model_id)
    scorer.limits = config.limits
    return scorer


def scorer_for(runtime, opts: ScoreOptions, model_id: Optional[str] = None):
    """The engine for a runtime: frames stay on the runtime's device when it works on tensors; with
    `--detector dlib` the seed's dlib detector on the CPU."""
    if opts.detector == spec.DETECTOR_DLIB:
        if getattr(runtime, "tensors", False):
            raise UsageError("--detector dlib runs on the CPU only (dlib's HOG detector); it cannot be used with "
                             f"the {getattr(runtime, 'name', 'torch')} runtime on {getattr(runtime, 'device', 'a device')}")
        from .pipeline.dlib_scorer import DlibScorer

        return DlibScorer(runtime, opts, model_id=model_id)
    if getattr(runtime, "tensors", False):
        from .pipeline.gpu_scorer import TorchScorer

        return TorchScorer(runtime, opts, model_id=model_id)
    from .pipeline.engine import Scorer

    return Scorer(runtime, opts, model_id=model_id)


@dataclass
class ScoreRun:
    """What `score_paths` did: the rows written (in order of completion) and totals."""

    rows: List[dict] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    todo: int = 0


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def score_paths(paths: Sequence[str], opts: ScoreOptions, config: ScorerConfig, out: Optional[Path] = None,
                resume: bool = False, progress: bool = True, summary: bool = True, scorer=None) -> ScoreRun:
    """Find the videos in `paths`, score them, write one JSON row per video (to `out` or stdout).

    Rows are flushed and fsynced as each video finishes; with `resume`, videos already in `out` are
    skipped. Ctrl-C / SIGTERM stop cleanly (`interrupted` is set; rows written so far stay).
    """
    from tqdm import tqdm

    from .pipeline.decode import find_videos
    from .pipeline.evidence_files import EvidenceFiles
    from .pipeline.results import RowWriter, path_key, read_done, summary_table

    if resume and out is None:
        raise UsageError("--resume needs --out FILE.jsonl")
    videos = find_videos(list(paths))
    if not videos:
        raise UsageError(f"no video files found in {' '.join(map(str, paths))}")
    done = read_done(out) if (resume and out) else set()
    todo = [v for v in videos if path_key(v) not in done]
    if done:
        log.info("--resume: %d of %d videos already in %s", len(videos) - len(todo), len(videos), out)
    scorer = scorer or make_scorer(opts, config)
    files = EvidenceFiles(out) if (out is not None and opts.explain) else None  # else PNGs stay base64 in the rows
    run = ScoreRun(todo=len(todo))
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), unit="video", disable=not progress or None, file=sys.stderr, dynamic_ncols=True)
    in_main = _in_main_thread()
    old = signal.getsignal(signal.SIGTERM) if in_main else None
    if in_main:
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        with RowWriter(out, append=bool(resume)) as w:
            for row in scorer.score(todo):
                if files is not None:
                    row = files.externalize(row)
                w.write(row)
                run.rows.append(row)
                run.frames += row["frames_scored"]
                el = max(time.perf_counter() - t0, 1e-9)
                bar.update(1)
                bar.set_postfix_str(f"{len(run.rows) / el:.2f} videos/s, {run.frames / el:.1f} frames/s")
                if row["error"]:
                    log.info("%s: %s: %s", row["path"], row["error"]["type"], row["error"]["message"])
    except KeyboardInterrupt:
        run.interrupted = True
        bar.close()
        print(f"\ninterrupted: {len(run.rows)} of {len(todo)} videos written"
              + (f" to {out}; rerun with --resume to finish" if out else ""), file=sys.stderr)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, old)
        bar.close()
    run.seconds = time.perf_counter() - t0
    if summary and not run.interrupted:
        print(summary_table(run.rows), file=sys.stderr)
        print(f"{len(run.rows)} videos, {run.frames} frames scored in {run.seconds:.1f} s "
              f"({run.frames / max(run.seconds, 1e-9):.1f} frames/s)", file=sys.stderr)
    return run


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
