"""`ScoreOptions`: every scoring option, validated in one place, with one JSON form.

The command line (`from_args`), the Triton `deepfake_video` model and the HTTP API (`from_json`)
and the client (`to_json`) all go through this class, so an option means the same everywhere.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from .. import spec
from ..errors import UsageError
from .sampling import SamplePolicy, parse_policy
from .split_decode import parse_auto_count, parse_split

FACES_MODES = ("largest", "all", "precropped")
FACES_ALIASES = {"detect": "largest"}  # the name before multi-face scoring
NO_FACE_MODES = ("skip", "frame")

# Options a caller of a server may set per request; the rest are the server's (repository config).
REQUEST_FIELDS = ("sample", "head", "faces", "no_face", "timeline", "chunk", "min_face", "min_track", "colors",
                  "explain")


def parse_cpu_decoders(value) -> str:
    """`auto` or a whole number 0..spec.MAX_CPU_DECODERS, as a string (the option's one form)."""
    return parse_auto_count(value, "--cpu-decoders", 0, spec.MAX_CPU_DECODERS)


@dataclass
class ScoreOptions:
    sample: SamplePolicy = field(default_factory=lambda: parse_policy("all"))
    head: str = spec.DEFAULT_HEAD
    faces: str = "largest"  # largest (one face a frame, the seed's) | all (every face, tracked) | precropped
    no_face: str = "skip"  # skip (left out of the verdict) | frame (classify the whole frame, as the seed)
    margin: float = 0.0
    timeline: bool = False
    batch: int = spec.DEFAULT_CLASSIFIER_BATCH
    chunk: int = spec.DEFAULT_CHUNK  # frames per decode/detect chunk
    detect_max_side: int = spec.DETECTOR_MAX_SIDE
    detect_threshold: float = spec.DETECTOR_SCORE_THRESHOLD
    decode_workers: int = 2
    streams: int = 0  # locate workers (detect + crop), each with its own CUDA stream on a GPU; 0: the scorer's choice
    min_face: float = spec.DETECTOR_MIN_FACE  # pixels (shorter side); smaller faces are ignored
    min_track: int = spec.DEFAULT_MIN_TRACK  # --faces all: shorter tracks are reported but do not decide
    colors: str = spec.DEFAULT_COLORS  # seed (BT.601 for every stream, as the seed's OpenCV) | stream (its own matrix)
    box: str = spec.DEFAULT_BOX  # seed (RetinaFace boxes mapped to dlib's framing) | retinaface (raw boxes)
    detector: str = spec.DETECTOR_RETINAFACE  # retinaface | dlib (the seed's HOG detector, CPU, first face)
    split: str = spec.DEFAULT_SPLIT  # auto | K: one video decoded as K key-frame ranges in parallel (split_decode.py)
    explain: int = 0  # evidence frames per row, with their occlusion heat (0: none computed, no cost)
    cpu_decoders: str = spec.DEFAULT_CPU_DECODERS  # auto | N: PyAV decoders joining the main ones (engine.Decoder)

    def __post_init__(self):
        if isinstance(self.sample, str):
            self.sample = parse_policy(self.sample)
        self.faces = FACES_ALIASES.get(self.faces, self.faces)
        if isinstance(self.split, int) and not isinstance(self.split, bool):
            self.split = str(self.split)
        if isinstance(self.cpu_decoders, int) and not isinstance(self.cpu_decoders, bool):
            self.cpu_decoders = str(self.cpu_decoders)

    def validate(self) -> "ScoreOptions":
        if self.head not in spec.HEADS:
            raise UsageError(f"--head must be one of {', '.join(spec.HEADS)}, got {self.head!r}")
        if self.faces not in FACES_MODES:
            raise UsageError(f"--faces must be one of {', '.join(FACES_MODES)}, got {self.faces!r}")
        if self.no_face not in NO_FACE_MODES:
            raise UsageError(f"--no-face must be one of {', '.join(NO_FACE_MODES)}, got {self.no_face!r}")
        if self.colors not in spec.COLORS:
            raise UsageError(f"--colors must be one of {', '.join(spec.COLORS)}, got {self.colors!r}")
        if self.faces == "all" and self.no_face == "frame":
            raise UsageError("--no-face frame (classify whole frames) applies to --faces largest, not --faces all")
        if self.box not in spec.BOX_CONVENTIONS:
            raise UsageError(f"--box must be one of {', '.join(spec.BOX_CONVENTIONS)}, got {self.box!r}")
        if self.detector not in spec.DETECTORS:
            raise UsageError(f"--detector must be one of {', '.join(spec.DETECTORS)}, got {self.detector!r}")
        if self.detector == spec.DETECTOR_DLIB and self.faces != "largest":
            raise UsageError(f"--detector dlib scores one face a frame (the first dlib finds, as the seed did): "
                             f"use it with --faces largest, not --faces {self.faces}")
        if not 0 <= self.min_face <= 4096:
            raise UsageError(f"--min-face must be between 0 and 4096 pixels, got {self.min_face}")
        if int(self.min_track) < 1:
            raise UsageError(f"--min-track must be at least 1 frame, got {self.min_track}")
        if not 0.0 <= self.margin <= 2.0:
            raise UsageError(f"--margin must be between 0 and 2 (fraction of the box size), got {self.margin}")
        if not 0.0 < self.detect_threshold < 1.0:
            raise UsageError(f"detect_threshold must be in (0, 1), got {self.detect_threshold}")
        if self.streams < 0 or self.streams > spec.MAX_STREAMS:
            raise UsageError(f"streams must be 0 (auto) to {spec.MAX_STREAMS}, got {self.streams}")
        for name in ("batch", "chunk", "decode_workers", "detect_max_side"):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        self.split = parse_split(self.split)
        self.cpu_decoders = parse_cpu_decoders(self.cpu_decoders)
        if isinstance(self.explain, bool) or not 0 <= int(self.explain) <= spec.MAX_EXPLAIN:
            raise UsageError(f"--explain must be between 0 and {spec.MAX_EXPLAIN} frames, got {self.explain!r}")
        if self.chunk > spec.MAX_CHUNK:
            raise UsageError(f"chunk must be at most {spec.MAX_CHUNK} frames, got {self.chunk}")
        return self

    # ------------------------------------------------------------------------------ conversions
    @classmethod
    def from_args(cls, args) -> "ScoreOptions":
        """From `dfserve score`'s argparse namespace (see commands.add_score_options)."""
        return cls(sample=parse_policy(args.sample), head=args.head, faces=args.faces, no_face=args.no_face,
                   margin=args.margin, timeline=args.timeline, batch=args.batch,
                   detect_max_side=args.detect_size, decode_workers=args.decode_workers,
                   streams=getattr(args, "streams", 0),
                   min_face=args.min_face, min_track=args.min_track,
                   colors=getattr(args, "colors", spec.DEFAULT_COLORS),
                   box=getattr(args, "box", spec.DEFAULT_BOX),
                   detector=getattr(args, "detector", spec.DETECTOR_RETINAFACE),
                   split=getattr(args, "split", spec.DEFAULT_SPLIT),
                   cpu_decoders=getattr(args, "cpu_decoders", spec.DEFAULT_CPU_DECODERS),
                   explain=getattr(args, "explain", 0) or 0).validate()

    @property
    def box_used(self) -> str:
        """The box convention of the crops: `dlib` (the seed's own detector), else `box` (seed | retinaface)."""
        return "dlib" if self.detector == spec.DETECTOR_DLIB else self.box

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sample"] = str(self.sample)
        return d

    def to_json(self, request_only: bool = False) -> str:
        """The JSON form (what the client sends to `deepfake_video`; what the web API records)."""
        d = self.to_dict()
        if request_only:
            d = {k: d[k] for k in REQUEST_FIELDS}
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any] | None, allowed=None) -> "ScoreOptions":
        """Parse and validate; unknown keys (or keys outside `allowed`) are refused by name."""
        if text is None or text == "" or text == b"":
            d: dict = {}
        elif isinstance(text, Mapping):
            d = dict(text)
        else:
            try:
                d = json.loads(text.decode() if isinstance(text, bytes) else text)
            except (ValueError, UnicodeDecodeError) as exc:
                raise UsageError(f"options: not valid JSON ({exc})") from None
        if not isinstance(d, dict):
            raise UsageError(f"options: expected a JSON object, got {type(d).__name__}")
        names = {f.name for f in fields(cls)} if allowed is None else set(allowed)
        unknown = sorted(set(d) - names)
        if unknown:
            raise UsageError(f"options: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        kinds = {f.name: f.type for f in fields(cls)}
        clean = {}
        for k, v in d.items():
            if k == "sample":
                clean[k] = parse_policy(str(v))
                continue
            if k in ("split", "cpu_decoders"):  # "auto" or a number, as a string or a JSON number
                clean[k] = (parse_split if k == "split" else parse_cpu_decoders)(v)
                continue
            want = kinds[k]
            try:
                if want in ("bool", bool):
                    if not isinstance(v, bool):
                        raise TypeError
                    clean[k] = v
                elif want in ("int", int):
                    if isinstance(v, bool) or float(v) != int(v):
                        raise TypeError
                    clean[k] = int(v)
                elif want in ("float", float):
                    if isinstance(v, bool):
                        raise TypeError
                    clean[k] = float(v)
                else:
                    if not isinstance(v, str):
                        raise TypeError
                    clean[k] = v
            except (TypeError, ValueError):
                raise UsageError(f"options: {k}={v!r} is not a valid {want}") from None
        return cls(**clean).validate()
