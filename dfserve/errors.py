"""Typed errors. Every error the project raises on purpose derives from DfserveError."""
from __future__ import annotations


class DfserveError(Exception):
    """Base class of all dfserve errors."""


class MissingDependencyError(DfserveError, ImportError):
    """An optional package is not installed."""


class CheckpointError(DfserveError):
    """A checkpoint file is not a seed-format state dict."""


class ExportValidationError(DfserveError):
    """An exported model disagrees with PyTorch beyond the stated tolerance."""


class VideoError(DfserveError):
    """A video could not be read (missing, empty, corrupt, truncated, not a video, absurd size)."""


class NoFaceError(DfserveError):
    """No face was found in any scored frame of a video."""


class ModelFilesError(DfserveError):
    """Exported model files are missing or inconsistent."""


class ServerError(DfserveError):
    """The Triton server failed to start, load a model or answer."""


class UsageError(DfserveError):
    """A command-line argument or option is invalid."""
