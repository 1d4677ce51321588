"""Subcommands beyond `export`: score, demo (and those registered by later modules)."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

from . import spec
from .errors import UsageError

log = logging.getLogger("dfserve")


# -------------------------------------------------------------------------------------------- score
def add_score_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `score` (embedded or --server) and anything that scores videos."""
    from .models import runtime_choices
    from .pipeline.precisions import PRECISIONS
    from .pipeline.sampling import DEFAULT_POLICY, HELP

    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="video files, folders (searched recursively) or @list.txt (one path per line)")
    src = p.add_argument_group("model (embedded runtime)")
    src.add_argument("--checkpoint", type=Path, help="seed checkpoint; exported on first use into a cache "
                                                      "keyed by its sha256 ($DFSERVE_CACHE or ~/.cache/dfserve)")
    src.add_argument("--models", type=Path, help="folder made by `dfserve export`")
    p.add_argument("--server", metavar="HOST:PORT", help="score through a Triton server (gRPC) instead of in-process")
    p.add_argument("--device", default="cpu", help="cpu (onnxruntime, default) or cuda[:N] (NVDEC decode + torch fp16 "
                                                   "on the GPU)")
    p.add_argument("--runtime", choices=runtime_choices(), default="auto",
                   help="embedded runtime: auto = the fastest installed on cpu (openvino, else onnxruntime), "
                        "torch on cuda")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="classifier precision: fp32 (exact, default), bf16 (openvino), int8 (a variant written by "
                        "`dfserve export --precision int8`); its measured drift is in the export's metadata.json")
    p.add_argument("--out", type=Path, help="JSON Lines output file (default: stdout)")
    p.add_argument("--resume", action="store_true", help="skip videos already in --out; append the rest")
    p.add_argument("--head", choices=spec.HEADS, default=spec.DEFAULT_HEAD,
                   help="mean: mean of per-frame logits (training notebook, default); last: last frame (Django app)")
    p.add_argument("--sample", default=DEFAULT_POLICY, help=f"frame sampling: {HELP}")
    p.add_argument("--faces", choices=("largest", "all", "precropped", "detect"), default="largest",
                   help="largest: the largest face of each frame (default; 'detect' is its old name); all: every "
                        "face, linked into tracks, one verdict per person, the video's from the most suspicious "
                        "person; precropped: frames are face crops already (the seed's processed datasets)")
    p.add_argument("--min-face", type=float, default=spec.DETECTOR_MIN_FACE, metavar="PX",
                   help=f"ignore faces smaller than PX pixels (shorter side; default {spec.DETECTOR_MIN_FACE})")
    p.add_argument("--min-track", type=int, default=spec.DEFAULT_MIN_TRACK, metavar="N",
                   help=f"--faces all: tracks shorter than N scored frames are reported but do not decide "
                        f"(default {spec.DEFAULT_MIN_TRACK})")
    p.add_argument("--no-face", choices=("skip", "frame"), default="skip",
                   help="frames without a face: skip (left out of the verdict, default) or frame (classify the "
                        "whole frame, as the seed did)")
    p.add_argument("--colors", choices=spec.COLORS, default=spec.DEFAULT_COLORS,
                   help="frame colours: seed (default: BT.601 for every stream, as the seed apps' OpenCV read frames "
                        "and as their checkpoints were trained) or stream (the stream's own matrix and range, for "
                        "checkpoints trained on correctly converted frames)")
    p.add_argument("--margin", type=float, default=0.0,
                   help="extra context around each face box, as a fraction of its size (seed: 0)")
    p.add_argument("--box", choices=spec.BOX_CONVENTIONS, default=spec.DEFAULT_BOX,
                   help="face box convention of the crops: seed (default: RetinaFace's boxes mapped to the box the "
                        "seed's dlib detector draws, the framing its checkpoints learned) or retinaface (raw boxes)")
    p.add_argument("--detector", choices=spec.DETECTORS, default=spec.DETECTOR_RETINAFACE,
                   help="retinaface (default, batched, any device) or dlib: the seed's own HOG detector, first face, "
                        "CPU only, the seed's speed; with --no-face frame its verdicts equal the seed's "
                        "(pip install 'dfserve[dlib]')")
    p.add_argument("--timeline", action="store_true", help="add per-frame [index, p_fake, box] to each row "
                                                          "(and `segments`: the time ranges scored FAKE)")
    p.add_argument("--explain", type=int, default=0, metavar="N",
                   help="add `evidence` to each row: the N most suspicious scored frames (of the deciding person with "
                        "--faces all), each with time, p_fake, face box, the face crop as a PNG (beside --out in "
                        "OUT_STEM.evidence/, else base64 in the row) and a 14x14 occlusion heat grid of where the "
                        f"face pushed p_fake toward FAKE; plus `segments`. Costs {spec.HEAT_PASSES} classifier passes per "
                        "frame explained (with --server: by the server's classifier); default 0: nothing computed")
    p.add_argument("--batch", type=int, default=spec.DEFAULT_CLASSIFIER_BATCH, help="classifier batch size")
    p.add_argument("--detect-size", type=int, default=spec.DETECTOR_MAX_SIDE,
                   help="longer side (pixels) frames are downscaled to for face detection")
    p.add_argument("--detect-every", type=int, default=1, metavar="K",
                   help="detect faces on every K-th sampled frame and carry boxes to the frames between (faster; "
                        "boxes may differ from per-frame detection: see docs/cpu.md). Default 1: every frame, "
                        "as the seed")
    p.add_argument("--decode-workers", type=int, default=2, help="videos decoded concurrently")
    p.add_argument("--compile", action="store_true",
                   help="--runtime torch: torch.compile (inductor) both networks; compiled once per batch shape and "
                        "cached on disk ($TORCHINDUCTOR_CACHE_DIR, default ~/.cache/dfserve/inductor): the first run "
                        "pays the compile time (logged), later ones load it")
    p.add_argument("--streams", type=int, default=0, metavar="N",
                   help="locate workers (detector + face crop), each with its own CUDA stream on a GPU; chunks "
                        f"leave them in decode order. 0 (default): {spec.GPU_STREAMS} with --device cuda (1 with "
                        "--faces all, whose tracker needs order), 1 on the CPU")
    p.add_argument("--split", default=spec.DEFAULT_SPLIT, metavar="K",
                   help="decode one video as K key-frame ranges in parallel (PyAV threads; the same frames as one "
                        f"decoder). Default {spec.DEFAULT_SPLIT}: one range below {spec.SPLIT_AUTO_MIN_CORES} cores "
                        f"(FFmpeg's own threads fill them), else up to cores/{spec.SPLIT_CORES_PER_RANGE}; with "
                        f"NVDEC (--device cuda) one session per range, auto: up to {spec.NVDEC_SPLIT_AUTO}")
    p.add_argument("--cpu-decoders", default=spec.DEFAULT_CPU_DECODERS, metavar="N",
                   help="PyAV decoders that join the --decode-workers ones, each taking a whole video only while "
                        "more videos wait than those can take at once (with NVDEC: CPU cores decoding beside it; on "
                        "a GPU they hand the decoded planes over, converted there). auto: with NVDEC, (cores - "
                        f"{spec.CPU_DECODERS_RESERVED_CORES}) / {spec.CPU_DECODER_CORES}, else 0. "
                        f"Default {spec.DEFAULT_CPU_DECODERS}")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for onnxruntime (0: all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-summary", action="store_true", help="no summary table at the end")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="score on a Ray cluster: HOST:PORT, auto or ray://HOST:PORT; alone: a local Ray (dfserve[ray])")
    p.add_argument("--ray-actors", type=int, default=0, metavar="N",
                   help="with --ray: N scorer actors (default: one per 4 CPUs of each node, or one per GPU)")
    from .pipeline.limits import add_arguments as add_limits

    add_limits(p, "local")  # per-video limits: off unless set (README: Request limits)


def run_score(args) -> int:
    from .pipeline.options import ScoreOptions
    from .scoring import ScorerConfig, score_paths

    opts, config, scorer = ScoreOptions.from_args(args), ScorerConfig.from_args(args), None
    if getattr(args, "ray", None):
        from .distributed.ray_scorer import RayScorer

        scorer = RayScorer(opts, config, address=args.ray, actors=args.ray_actors, summary=not args.no_summary)
    try:
        run = score_paths(args.paths, opts, config, out=args.out, resume=args.resume,
                          progress=not args.no_progress, summary=not args.no_summary, scorer=scorer)
    finally:
        if scorer is not None:
            scorer.close()
    return 130 if run.interrupted else 0


def _add_score(sub) -> None:
    p = sub.add_parser("score", help="score videos (whole length by default), one JSON row per video",
                       description="Score every video of PATH... and write one JSON object per video as it finishes: "
                                   "path, label (FAKE/REAL/null), p_fake, confidence, frame counts, duration_s, fps, "
                                   "model (checkpoint sha256), error. Exit status is non-zero only for usage errors; "
                                   "a bad file becomes a row with `error`.")
    add_score_options(p)
    p.set_defaults(func=run_score)


# --------------------------------------------------------------------------------------------- demo
def run_demo(args) -> int:
    from .demo import run

    return run(args.workdir, args.models_dir, progress=not args.no_progress)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="generate sample videos, export models, score them, print the table",
                       description="The main job on a fresh machine: makes sample face videos from scikit-image "
                                   "images (H.264 and HEVC, one without a face, one corrupt), uses a checkpoint from "
                                   "models/ if there is one (else random UNTRAINED weights, with a loud warning), and "
                                   "scores them with the embedded runtime.")
    p.add_argument("--workdir", type=Path, default=Path("demo_out"), help="where videos and results go")
    p.add_argument("--models-dir", type=Path, default=Path("models"), help="folder searched for a checkpoint (*.pt)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_demo)


# -------------------------------------------------------------------------------------------- bench
def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="benchmark the seed pipeline and dfserve side by side (writes benchmarks/results/)",
                       description="Runs the seed pipeline (OpenCV decode, dlib HOG faces, eager fp32, first N frames) "
                                   "and dfserve on the same generated videos and weights in one run; writes JSON, "
                                   "Markdown and PNG plots to benchmarks/results/<machine>/.")
    p.add_argument("--quick", action="store_true", help="a small set that finishes in minutes on 2 CPU cores")
    p.add_argument("--checkpoint", help="seed checkpoint (default: seeded random UNTRAINED weights)")
    p.add_argument("--server", metavar="HOST:PORT", help="also benchmark a running Triton server (cpu flavor)")
    p.add_argument("--triton", action="store_true",
                   help="also start a tritonserver (cpu flavor) on the benchmark's models and benchmark it")
    p.add_argument("--perf-analyzer", action="store_true",
                   help="with --server/--triton: run perf_analyzer's concurrency sweep on the ensemble")
    p.add_argument("--workdir", default=".cache/bench", help="generated videos and models (default .cache/bench)")
    p.add_argument("--out", help="results root (default benchmarks/results)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    g = p.add_argument_group("CPU runtimes x precisions (instead of the benchmark above)")
    g.add_argument("--runtimes", metavar="LIST",
                   help="e.g. onnxruntime,openvino: end-to-end --sample all frames/s of each runtime x --precisions "
                        "beside the seed pipeline and fp32 onnxruntime, micro benchmarks and the drift table "
                        "(cpu_runtimes.json/.md/.png); 720p, and 1080p without --quick")
    g.add_argument("--precisions", metavar="LIST", default="fp32,bf16,int8",
                   help="with --runtimes: fp32,bf16,int8 or a subset (default all; bf16 runs on OpenVINO only)")
    g.add_argument("--rounds", type=int, default=0, help="with --runtimes: interleaved rounds, medians reported "
                                                         "(default 3; 1 with --quick)")
    g.add_argument("--long", type=int, default=0, metavar="SECONDS",
                   help="with --runtimes: also score a SECONDS-long 720p video (the 10-s clip looped, remuxed) with "
                        "the default CPU path, fp32 (frames/s, peak RSS)")
    g.add_argument("--long-sample", default="all", metavar="POLICY",
                   help="with --long: the sampling policy of the long video (default all; every:10 still decodes "
                        "every frame and scores one in ten)")
    g.add_argument("--no-seed", action="store_true", help="with --runtimes: skip the seed pipeline")
    p.set_defaults(func=_run_bench)


def _run_bench(args) -> int:
    import importlib

    mod = "dfserve.bench.runtimes" if args.runtimes else "dfserve.bench.run"
    return importlib.import_module(mod).run(args)


# ------------------------------------------------------------------------------------- repo / serve
def _add_repo(sub) -> None:
    p = sub.add_parser("repo", help="generate the Triton model repository from the spec")
    rs = p.add_subparsers(dest="repo_command", metavar="ACTION")
    rs.required = True
    b = rs.add_parser("build", help="write config.pbtxt + model.py for every model (and copy the model files)",
                      description="Generate the Triton model repository: face_prep, face_detector, face_crop, "
                                  "frame_classifier, the ensemble deepfake_frames, the stateful video_aggregator "
                                  "and the whole-video model deepfake_video.")
    b.add_argument("--flavor", choices=spec.REPO_FLAVORS, default="cpu",
                   help="cpu: python models + onnxruntime/OpenVINO; gpu: python models in torch on the GPU (fp16, CUDA "
                        "graphs, GPU tensors by DLPack; any tritonserver with the python backend); gpu-tensorrt: "
                        "TensorRT plans for the two networks + python models on GPU tensors (NVIDIA's container)")
    b.add_argument("--models", type=Path, help="folder made by `dfserve export` (model files are copied in)")
    b.add_argument("--out", type=Path, default=Path("model_repository"), help="repository folder")
    from .pipeline.limits import add_arguments as add_limits

    add_limits(b, "server")  # deepfake_video's per-request limits, written as its config parameters
    b.set_defaults(func=_cmd_repo_build)


def _cmd_repo_build(args) -> int:
    from .pipeline.limits import from_args as limits_from_args
    from .serving.repo import build_repo

    out = build_repo(args.out, args.flavor, args.models, limits_from_args(args, "server"))
    print(f"wrote the {args.flavor} model repository to {out}"
          + ("" if args.models else " (configs only: add --models DIR to copy the model files)"))
    return 0


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="run tritonserver on a model repository (loopback by default)",
                       description="Start a real tritonserver: `tritonserver` from PATH (NVIDIA's container) or the "
                                   "binary of the nvidia-pytriton wheel. Waits until every model is ready, says which "
                                   "model failed to load and why, stops cleanly on Ctrl-C / SIGTERM.")
    p.add_argument("--repo", type=Path, default=Path("model_repository"), help="model repository")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--log-verbose", type=int, default=0)
    p.add_argument("--cuda-pool-mb", type=int, default=2048, metavar="MB",
                   help="CUDA memory pool of GPU 0 for tensors passed between the gpu flavor's models (default "
                        "2048; used only when a model of the repository runs on the GPU)")
    p.add_argument("--http-inference", action="store_true",
                   help="allow inference over HTTP (default: HTTP inference, shared-memory, model-repository, trace "
                        "and logging requests need a random header only this launcher knows; use gRPC. tritonserver "
                        "2.51 crashes on HTTP JSON requests with BYTES inputs of 4.5 MB or more)")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args) -> int:
    from .serving.server import TritonServer

    srv = TritonServer(args.repo, args.grpc_port, args.http_port, args.metrics_port, host=args.host,
                       log_verbose=args.log_verbose, http_inference=args.http_inference,
                       cuda_pool_mb=args.cuda_pool_mb)
    stop = {"sig": None}

    def on_signal(sig, _frame):
        stop["sig"] = sig

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    srv.start()
    http = "inference open" if args.http_inference else "inference restricted: use gRPC"
    print(f"serving {args.repo} — gRPC {srv.grpc_url}, HTTP {args.host}:{srv.http_port} ({http}), metrics "
          f"{args.host}:{srv.metrics_port}; Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        while stop["sig"] is None and srv.proc is not None and srv.proc.poll() is None:
            time.sleep(0.3)
        if stop["sig"] is None:
            print(f"tritonserver exited unexpectedly:\n{srv.log_tail(30)}", file=sys.stderr)
            return 1
    finally:
        srv.stop()
    print("tritonserver stopped", file=sys.stderr)
    return 0


def _add_perf(sub) -> None:
    p = sub.add_parser("perf", help="perf_analyzer concurrency sweep of the deepfake_frames ensemble",
                       description="Runs perf_analyzer (from the tritonclient 2.51 wheel) against a running server's "
                                   "deepfake_frames ensemble with real 640x360 face frames, and writes its report and "
                                   "a JSON summary (frames/s, p50/p99 latency) to benchmarks/results/<machine>/.")
    p.add_argument("--server", required=True, metavar="HOST:PORT")
    p.add_argument("--batch", type=int, default=8, help="frames per request")
    p.add_argument("--concurrency", default="1:4", help="perf_analyzer --concurrency-range, e.g. 1:8:2")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.set_defaults(func=_cmd_perf)


def _cmd_perf(args) -> int:
    import json as _json

    from .bench.run import machine_info, machine_slug
    from .serving.perf import run_perf_analyzer, summarize

    report = run_perf_analyzer(args.server, quick=False, batch=args.batch, concurrency=args.concurrency)
    out = args.out / machine_slug(machine_info())
    out.mkdir(parents=True, exist_ok=True)
    (out / "perf_analyzer.txt").write_text(report)
    rows = summarize(report, args.batch)
    (out / "perf_analyzer.json").write_text(_json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=1))
    for r in rows:
        print(f"concurrency {r['concurrency']}: {r['frames_per_s']} frames/s, p50 {r.get('p50_latency_ms')} ms, "
              f"p99 {r['p99_latency_ms']} ms (batch {r['batch']})")
    print(f"wrote {out / 'perf_analyzer.txt'} and {out / 'perf_analyzer.json'}", file=sys.stderr)
    return 0


def _add_doctor(sub) -> None:
    p = sub.add_parser("doctor", help="what this machine can run (GPUs, NVDEC, TensorRT, onnxruntime, OpenVINO, Triton) "
                                      "and which dfserve options will work here")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-decode-test", action="store_true", help="skip NVDEC's decode of a generated clip")
    p.set_defaults(func=lambda a: __import__("dfserve.doctor", fromlist=["run"]).run(a))


def _add_web(sub) -> None:
    from .web.cli import add_arguments, run

    p = sub.add_parser("web", help="serve the upload page and the HTTP job API (loopback by default)",
                       description="Upload a video in the browser or POST /v1/jobs, poll the job, read the verdict "
                                   "and its per-frame timeline. Jobs persist in SQLite; uploads live under --data-dir.")
    add_arguments(p)
    p.set_defaults(func=run)


ALL = [_add_score, _add_demo, _add_repo, _add_serve, _add_perf, _add_bench, _add_doctor, _add_web]
