"""The gRPC client other services use: numpy + tritonclient only, never torch.

Import cost matters for services that embed it: nothing here imports torch, onnx or onnxruntime.
"""
from __future__ import annotations

from .. import spec  # noqa: F401  (numpy-only: tensor names and shapes come from the one spec)
