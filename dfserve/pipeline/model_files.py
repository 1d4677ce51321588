"""The folder `dfserve export` writes: its metadata and what result rows call the model."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .. import spec
from ..errors import ModelFilesError


def cache_root() -> Path:
    """dfserve's cache: $DFSERVE_CACHE, else $XDG_CACHE_HOME/dfserve (~/.cache/dfserve): exported checkpoints,
    OpenVINO's compiled models, torch.compile's kernels."""
    env = os.environ.get("DFSERVE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dfserve"


def model_id_from_metadata(meta: dict) -> str:
    """What result rows call the model: the checkpoint's sha256, or UNTRAINED-random-seed-N."""
    w = meta.get("weights", {})
    return w.get("sha256") or f"UNTRAINED-random-seed-{w.get('random_seed')}"


def read_metadata(models_dir: Path, need_onnx: bool = True) -> dict:
    """The export's metadata; with `need_onnx` the folder must hold both ONNX files too (the torch runtime
    and the gpu flavor's torch models need only the metadata: weights come from the checkpoint or seed)."""
    need = (spec.CLASSIFIER_ONNX, spec.DETECTOR_ONNX, spec.METADATA_JSON) if need_onnx else (spec.METADATA_JSON,)
    missing = [n for n in need if not (Path(models_dir) / n).is_file()]
    if missing:
        raise ModelFilesError(f"{models_dir}: missing {', '.join(missing)}; create them with "
                              f"`dfserve export --checkpoint CKPT --out {models_dir}`")
    try:
        meta = json.loads((Path(models_dir) / spec.METADATA_JSON).read_text())
    except ValueError as exc:
        raise ModelFilesError(f"{models_dir / spec.METADATA_JSON}: not valid JSON ({exc})") from exc
    if str(meta.get("spec_version")) != spec.SPEC_VERSION:
        raise ModelFilesError(f"{models_dir}: exported with spec version {meta.get('spec_version')!r}, this dfserve "
                              f"uses {spec.SPEC_VERSION!r}; re-export with `dfserve export`")
    return meta
