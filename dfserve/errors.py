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


MAX_MESSAGE_CHARS = 2000  # error messages that travel to a client are cut to this length


def cut(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`message`, at most `limit` characters (the middle is dropped, so both ends stay readable)."""
    if len(message) <= limit:
        return message
    mark = " [...] "
    head = (limit - len(mark)) * 2 // 3
    return message[:head] + mark + message[len(message) - (limit - len(mark) - head):]


class RequestLimitError(DfserveError):
    """A request went over a limit of the server (frames decoded, pixels per frame, CPU seconds).

    The message names the limit and the client's file name (never a server path), at most
    MAX_MESSAGE_CHARS long; `limit` is the limit's name (`spec.REQUEST_LIMITS` param, e.g. "max_frames"),
    the machine-readable code rows and HTTP answers carry."""

    def __init__(self, message: str, limit: str | None = None):
        super().__init__(cut(str(message)))
        self.limit = limit

    def __reduce__(self):  # pickled with its limit (a Ray actor's error reaches the driver whole)
        return type(self), (str(self), self.limit)


class ImageShapeError(DfserveError, ValueError):
    """An image or crop handed to the face resize has an unusable shape or dtype."""
