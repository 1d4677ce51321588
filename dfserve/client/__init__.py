"""The gRPC client other services use: numpy + tritonclient only, never torch.

Import cost matters for services that embed it: nothing here imports torch, onnx or onnxruntime.
tritonclient itself is imported when a client is created.
"""
from __future__ import annotations

from .triton import DeepfakeClient, FramesResult, RemoteAggregate  # noqa: F401
