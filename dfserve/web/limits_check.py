"""The web server's use of the request limits (pipeline/limits.py) before a job is queued."""
from __future__ import annotations

from pathlib import Path

from .. import spec
from ..errors import VideoError
from ..pipeline.limits import RequestLimits


def check_header(limits: RequestLimits, path: Path, name: str) -> None:
    """Refuse (RequestLimitError, naming `name`) an upload whose header is over a limit: its frame size, or the
    frame count its container's index declares. A file that cannot be probed is left to the job, which says why."""
    from ..pipeline.decode import probe

    if not limits.active:
        return
    try:
        info = probe(str(path))
    except VideoError:
        return
    limits.check_info(name, info.width, info.height, info.frames_declared)


def limits_json(limits: RequestLimits) -> dict:
    """The limits as numbers by name (GET /v1/config); 0: none."""
    return {lim.param: getattr(limits, lim.param) for lim in spec.REQUEST_LIMITS}
