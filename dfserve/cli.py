"""The `dfserve` command line: one console script, several subcommands.

Heavy packages (torch, onnx, tritonclient) are imported inside the subcommands that need them, so
`dfserve --help` is instant and a missing optional package names the extra to install.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__, spec
from .errors import DfserveError, UsageError

log = logging.getLogger("dfserve")

EXIT_USAGE = 2
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)


# ------------------------------------------------------------------------------------------- export
def _add_export(sub) -> None:
    p = sub.add_parser(
        "export", help="export a seed checkpoint to validated ONNX models (classifier + face detector)",
        description="Export a seed checkpoint (model_<acc>_acc_<N>_frames_final_data.pt) to "
                    "frame_classifier.onnx and face_detector.onnx, validate both against PyTorch on real "
                    "face crops, and write metadata.json beside them.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", type=Path, help="seed state dict (.pt), plain or DataParallel")
    src.add_argument("--random-init", action="store_true",
                     help="use seeded RANDOM, UNTRAINED weights (engine tests only); needs --seed")
    p.add_argument("--seed", type=int, help="random seed for --random-init")
    p.add_argument("--out", type=Path, help="output folder for the models")
    trt = p.add_argument_group("TensorRT (GPU machines with the tensorrt package)")
    trt.add_argument("--tensorrt", action="store_true", help="also build TensorRT engines (.plan) and check them "
                                                          "against onnxruntime")
    trt.add_argument("--models", type=Path, help="with --tensorrt: build engines for this existing export")
    trt.add_argument("--fp16", action="store_true", help="TensorRT: allow fp16 kernels")
    trt.add_argument("--int8", action="store_true", help="TensorRT: INT8, calibrated on real face crops (--calib)")
    trt.add_argument("--calib", nargs="+", default=[], metavar="VIDEO",
                     help="videos/folders for INT8 calibration (TensorRT --int8 and --precision int8)")
    p.add_argument("--head", choices=spec.HEADS, default=spec.DEFAULT_HEAD,
                   help="video head recorded in the metadata: mean (training notebook) or last (Django app)")
    p.add_argument("--no-validate", action="store_true", help="skip the validation against PyTorch")
    prec = p.add_argument_group("precision variants (issue 11; with --out, or --models DIR for an existing export)")
    prec.add_argument("--precision", metavar="LIST", help="fp32,bf16,int8 (any subset): write each variant (int8: "
                      "static QDQ calibrated on --calib VIDEOS, default scikit-image real faces) and its measured "
                      "drift against fp32 into metadata.json")
    prec.add_argument("--force", action="store_true", help="write a variant even if its label agreement with fp32 "
                      "is below 99 %%")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    if args.int8 and not args.calib:
        raise UsageError("--int8 needs --calib VIDEO... (real face videos to calibrate on)")
    if args.models is not None:
        if args.precision and not args.tensorrt:  # issue 11: precision variants of an existing export
            return _export_precisions(args, args.models)
        if not args.tensorrt:
            raise UsageError("--models is for --tensorrt on an existing export; to export use --out")
        return _build_trt(args, args.models)
    if args.out is None:
        raise UsageError("--out DIR is required")
    if args.random_init and args.seed is None:
        raise UsageError("--random-init needs --seed N (so the untrained weights are reproducible)")
    if not args.random_init and args.checkpoint is None:
        raise UsageError("no checkpoint: pass --checkpoint CKPT, or --random-init --seed N for UNTRAINED weights")
    from .export.onnx_export import UNTRAINED_WARNING, export_models

    if args.random_init:
        print(f"\n!!! {UNTRAINED_WARNING}\n", file=sys.stderr)
    rep = export_models(args.out, checkpoint=args.checkpoint, random_init=args.random_init, seed=args.seed,
                        head=args.head, validate=not args.no_validate)
    print(f"exported to {rep.out_dir} in {rep.seconds:.1f} s")
    for name, size in rep.sizes.items():
        print(f"  {name:24s} {size / 1e6:8.1f} MB")
    v = rep.metadata.get("validation", {})
    if v:
        c, d = v["frame_classifier"], v["face_detector"]
        print(f"  classifier vs the float64 seed forward: max |logit error| {c['max_abs_logit_error']:.2e} "
              f"({c['max_logit_error_over_tolerance']:.2f} of the float32-rounding tolerance), "
              f"max verdict p_fake error {c['max_verdict_prob_error']:.2e}")
        f32 = c.get("vs_float32_seed_forward")
        if f32:
            print(f"  classifier vs a float32 seed forward: max |logit error| {f32['max_abs_logit_error']:.2e}, "
                  f"max verdict p_fake error {f32['max_verdict_prob_error']:.2e}")
        print(f"  detector:   max |score error| {d['max_abs_scores_error']:.2e}, "
              f"vs shipped ONNX {d['max_abs_shipped_scores_error']:.2e}")
    if rep.metadata["weights"]["untrained"]:
        print(f"\n!!! {UNTRAINED_WARNING}", file=sys.stderr)
    if args.precision:  # issue 11
        _export_precisions(args, args.out)
    if args.tensorrt:
        return _build_trt(args, args.out)
    return 0


def _export_precisions(args, models) -> int:
    from .export.precision import export_precisions, parse_precisions

    report = export_precisions(models, parse_precisions(args.precision), calib_videos=args.calib, force=args.force)
    for name, e in report.items():
        for rt, d in e.get("drift", {}).items():
            pf, pv = d["per_frame"], d["per_video"]
            print(f"  {name:5s} {rt:12s} per frame max |dp_fake| {pf['max_abs_dp_fake']:.2e} (mean "
                  f"{pf['mean_abs_dp_fake']:.2e}), labels {pf['label_agreement']:.1%}; video@10 max "
                  f"{pv['mean@10']['max_abs_dp_fake']:.2e}, @100 {pv['mean@100']['max_abs_dp_fake']:.2e}; feature "
                  f"cosine min {d['features_cosine']['min']:.4f}" + ("  [FORCED]" if e.get("forced") else ""))
    print(f"  precision variants in {models}: {', '.join(e['file'] + ' (' + n + ')' for n, e in report.items())}")
    return 0


def _build_trt(args, models) -> int:
    from .export.tensorrt_build import build_engines

    report = build_engines(models, fp16=args.fp16, int8=args.int8, calib=args.calib)
    for name, r in report.items():
        print(f"  {name}: {r}")
    return 0


# ---------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dfserve", description="Deepfake-video detection inference engine for the seed ResNeXt50+LSTM model.",
        epilog="Run `dfserve COMMAND --help` for a command's options.")
    p.add_argument("--version", action="version", version=f"dfserve {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=1, help="more logging")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_export(sub)
    from .inspect_cmd import add_inspect

    add_inspect(sub)
    for add in _extra_commands():
        add(sub)
    return p


def _extra_commands():
    """Subcommands defined in their own modules (kept out of this file to keep it small)."""
    from . import commands

    return commands.ALL


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        parser.exit(EXIT_USAGE, f"dfserve {args.command}: error: {exc}\n")
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except DfserveError as exc:
        print(f"dfserve {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
