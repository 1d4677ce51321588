"""Precision names and the classifier file each one runs (pipeline layer: spec and errors only).

fp32 and bf16 share the fp32 ONNX (bf16 is an OpenVINO compile hint); int8 has its own QDQ file written by
`dfserve export --precision int8` (`dfserve.export.precision`).
"""
from __future__ import annotations

from pathlib import Path

from .. import spec
from ..errors import UsageError

PRECISIONS = ("fp32", "bf16", "int8")
INT8_FILE = "frame_classifier.int8.onnx"


def classifier_file(models_dir, precision: str = "fp32") -> Path:
    """The classifier file a precision runs: fp32 and bf16 share the fp32 ONNX, int8 has its own."""
    models_dir = Path(models_dir)
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8":
        return models_dir / INT8_FILE
    return models_dir / spec.CLASSIFIER_ONNX
