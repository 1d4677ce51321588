"""Where exported models come from: a folder (`--models DIR`) or a checkpoint exported on first use
into a cache keyed by the checkpoint's sha256 (`--checkpoint CKPT`)."""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import spec
from .errors import ModelFilesError, UsageError

log = logging.getLogger(__name__)


def cache_root() -> Path:
    env = os.environ.get("DFSERVE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dfserve"


@dataclass
class ResolvedModels:
    models_dir: Path
    metadata: dict

    @property
    def model_id(self) -> str:
        return model_id_from_metadata(self.metadata)

    @property
    def untrained(self) -> bool:
        return bool(self.metadata.get("weights", {}).get("untrained"))


def model_id_from_metadata(meta: dict) -> str:
    """What result rows call the model: the checkpoint's sha256, or UNTRAINED-random-seed-N."""
    w = meta.get("weights", {})
    return w.get("sha256") or f"UNTRAINED-random-seed-{w.get('random_seed')}"


def read_metadata(models_dir: Path) -> dict:
    missing = [n for n in (spec.CLASSIFIER_ONNX, spec.DETECTOR_ONNX, spec.METADATA_JSON)
               if not (models_dir / n).is_file()]
    if missing:
        raise ModelFilesError(f"{models_dir}: missing {', '.join(missing)}; create them with "
                              f"`dfserve export --checkpoint CKPT --out {models_dir}`")
    try:
        meta = json.loads((models_dir / spec.METADATA_JSON).read_text())
    except ValueError as exc:
        raise ModelFilesError(f"{models_dir / spec.METADATA_JSON}: not valid JSON ({exc})") from exc
    if str(meta.get("spec_version")) != spec.SPEC_VERSION:
        raise ModelFilesError(f"{models_dir}: exported with spec version {meta.get('spec_version')!r}, this dfserve "
                              f"uses {spec.SPEC_VERSION!r}; re-export with `dfserve export`")
    return meta


def resolve_models(models: Optional[Path] = None, checkpoint: Optional[Path] = None) -> ResolvedModels:
    if models is not None and checkpoint is not None:
        raise UsageError("give --models DIR or --checkpoint CKPT, not both")
    if models is not None:
        return ResolvedModels(Path(models), read_metadata(Path(models)))
    if checkpoint is None:
        raise UsageError("no model: pass --checkpoint model_<acc>_acc_<N>_frames_final_data.pt or --models DIR "
                         "(a folder made by `dfserve export`)")
    from .export.checkpoint import sha256_file
    from .export.onnx_export import export_models

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise UsageError(f"--checkpoint {checkpoint}: no such file")
    digest = sha256_file(checkpoint)
    target = cache_root() / "models" / digest[:24]
    if (target / spec.METADATA_JSON).is_file():
        log.info("using cached export of %s in %s", checkpoint, target)
        return ResolvedModels(target, read_metadata(target))
    log.info("first use of %s (sha256 %s…): exporting to %s", checkpoint, digest[:12], target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        export_models(tmp, checkpoint=checkpoint)
        try:
            tmp.rename(target)
        except OSError:  # another process exported it meanwhile
            if not (target / spec.METADATA_JSON).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return ResolvedModels(target, read_metadata(target))
