"""Loading seed checkpoints (as people save them) and making seeded random ones.

Seed checkpoints are `torch.save(model.state_dict(), "model_<acc>_acc_<N>_frames_final_data.pt")`;
`module.`-prefixed ones (DataParallel) and training checkpoints ({"epoch": ..., "model_state_dict": ...,
"optimizer_state_dict": ...}) are read too. Always with `weights_only=True`: nothing but tensors and
plain containers is ever unpickled; a whole pickled model is refused with the way to re-save it. The file name is
never parsed to choose a model; the keys and shapes decide.
"""
from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from .. import spec
from ..errors import CheckpointError
from ..nets.seed_model import SeedModel

log = logging.getLogger(__name__)

EXPECTED_FORMAT = (
    "a seed state dict (torch.save(model.state_dict())) with keys 'model.0.weight' ... "
    "'model.7.2.bn3.*' (ResNeXt50_32x4d children minus avgpool/fc), 'lstm.weight_ih_l0' and "
    "'lstm.weight_hh_l0' [8192, 2048] (optionally 'lstm.bias_ih_l0'/'lstm.bias_hh_l0' [8192]), "
    "'linear1.weight' [2, 2048] and 'linear1.bias' [2]; a 'module.' prefix (DataParallel) is accepted, and so "
    "is a training checkpoint dict holding it under 'state_dict', 'model_state_dict' or 'model'"
)
OPTIONAL_SUFFIXES = ("num_batches_tracked",)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "state")
RESAVE_HINT = ("re-save its weights as a state dict, where you trust the file: "
               "`model = torch.load(path, weights_only=False); torch.save(model.state_dict(), path)` "
               "(the model's class must be importable); dfserve never unpickles code")


def _unsupported_global(exc: BaseException) -> Optional[str]:
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    return m.group(1) if m else None


def read_checkpoint(path: str | Path) -> Tuple[Dict[str, torch.Tensor], dict]:
    """Read a checkpoint file as a flat {name: tensor} dict, tensors only, and say what was found.

    Accepted, always with `torch.load(..., weights_only=True)`: a plain state dict, a `module.`-prefixed
    one (DataParallel / DistributedDataParallel), and a training checkpoint: a dict holding the state dict
    under one of STATE_DICT_KEYS beside other entries (epoch, optimizer state, ...). A whole pickled model
    is refused with the way to re-save it. Returns (state dict, {"format", "container_key", "other_entries",
    "prefix"}).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; expected {EXPECTED_FORMAT}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zips, not-a-checkpoint files
        glob = _unsupported_global(exc)
        if glob:
            raise CheckpointError(
                f"{path}: holds a pickled Python object ({glob}), most likely a whole model saved with "
                f"torch.save(model) rather than its state dict. It is not loaded: checkpoints are read weights-only "
                f"(torch.load(weights_only=True)), because unpickling objects can run arbitrary code. To use it, "
                f"{RESAVE_HINT}.") from exc
        raise CheckpointError(
            f"{path}: cannot be read as a weights-only state dict ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); expected {EXPECTED_FORMAT}. "
            "Whole pickled models are refused on purpose: save model.state_dict() instead.") from exc
    info = {"format": "state dict", "container_key": None, "other_entries": [], "prefix": None}
    if isinstance(obj, dict) and obj and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        key = next((k for k in STATE_DICT_KEYS if isinstance(obj.get(k), dict) and obj[k]
                    and all(isinstance(v, torch.Tensor) for v in obj[k].values())), None)
        if key is None:
            entries = ", ".join(f"{k!r}: {type(v).__name__}" for k, v in list(obj.items())[:8])
            raise CheckpointError(
                f"{path}: a dict that is neither a state dict (name -> tensor) nor a training checkpoint with the "
                f"state dict under one of {', '.join(repr(k) for k in STATE_DICT_KEYS)} (found {entries}); "
                f"expected {EXPECTED_FORMAT}")
        info.update(format=f"training checkpoint: state dict under {key!r}", container_key=key,
                    other_entries=sorted(str(k) for k in obj if k != key))
        obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict; expected {EXPECTED_FORMAT}")
    if not obj:
        raise CheckpointError(f"{path}: an empty state dict; expected {EXPECTED_FORMAT}")
    for prefix in ("module.", "_orig_mod.", "module._orig_mod."):
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
            info["prefix"] = prefix
            info["format"] += f" with a {prefix!r} prefix" + (" (DataParallel)" if prefix == "module." else "")
            break
    return obj, info


def read_state_dict(path: str | Path) -> Dict[str, torch.Tensor]:
    """Read a checkpoint file as a flat {name: tensor} dict, tensors only (see read_checkpoint)."""
    return read_checkpoint(path)[0]


def check_seed_keys(sd: Dict[str, torch.Tensor]) -> Tuple[bool, List[str]]:
    """(lstm_bias, problems): missing/unexpected keys and wrong shapes against the seed model."""
    lstm_bias = "lstm.bias_ih_l0" in sd or "lstm.bias_hh_l0" in sd
    expected = {k: tuple(v.shape) for k, v in SeedModel(lstm_bias=lstm_bias).state_dict().items()}
    missing = [k for k in expected if k not in sd and not k.endswith(OPTIONAL_SUFFIXES)]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k}: {tuple(sd[k].shape)} (expected {expected[k]})"
             for k in expected if k in sd and tuple(sd[k].shape) != expected[k]]
    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): {_short(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {_short(unexpected)}")
    if wrong:
        parts.append(f"wrong shapes: {_short(wrong)}")
    return lstm_bias, parts


NAME_PATTERN = re.compile(r"model_(?P<acc>\d+(?:\.\d+)?)_acc_(?P<frames>\d+)_frames", re.IGNORECASE)


def inspect_checkpoint(path: str | Path) -> dict:
    """What a checkpoint holds, without exporting it (`dfserve inspect`). Raises CheckpointError only when
    the file cannot be read at all; a readable file that is not a seed model is reported with its problems."""
    path = Path(path)
    sd, info = read_checkpoint(path)
    lstm_bias, problems = check_seed_keys(sd)
    head = sd.get("linear1.weight")
    m = NAME_PATTERN.search(path.name)
    n_params = sum(int(v.numel()) for k, v in sd.items() if not k.endswith(OPTIONAL_SUFFIXES)
                   and not k.endswith(("running_mean", "running_var")))
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in sd.values()})
    return {
        "path": str(path),
        "file_size": path.stat().st_size,
        "sha256": sha256_file(path),
        "format": info["format"],
        "container_key": info["container_key"],
        "other_entries": info["other_entries"],
        "prefix": info["prefix"],
        "seed_model": not problems,
        "problems": problems,
        "head_shape": list(head.shape) if isinstance(head, torch.Tensor) else None,
        "num_classes": int(head.shape[0]) if isinstance(head, torch.Tensor) and head.dim() == 2 else None,
        "lstm_bias": lstm_bias,
        "lstm_weight_ih_shape": list(sd["lstm.weight_ih_l0"].shape) if "lstm.weight_ih_l0" in sd else None,
        "tensors": len(sd),
        "parameters": n_params,
        "dtypes": dtypes,
        "name_accuracy": float(m.group("acc")) if m else None,
        "name_frames": int(m.group("frames")) if m else None,
        "name_note": "accuracy and frame count parsed from the file name, information only: "
                     "dfserve never chooses a model by its name" if m else "the file name carries no "
                     "model_<acc>_acc_<N>_frames pattern (information only)",
    }


def load_seed_model(path: str | Path) -> SeedModel:
    """Build a SeedModel (eval mode) from a seed checkpoint, checking every key and shape."""
    sd = read_state_dict(path)
    lstm_bias, problems = check_seed_keys(sd)
    if problems:
        raise CheckpointError(f"{path}: not a seed checkpoint: {'; '.join(problems)}. Expected {EXPECTED_FORMAT}")
    model = SeedModel(lstm_bias=lstm_bias)
    model.load_state_dict(sd, strict=False)
    return model.eval()


def _short(items, n: int = 6) -> str:
    s = ", ".join(items[:n])
    return s + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


def random_seed_model(seed: int, lstm_bias: bool = False, logit_std: float = 1.5) -> SeedModel:
    """A SeedModel with seeded random weights that behaves like a trained one numerically.

    Plain random init leaves BatchNorm statistics at (0, 1), so activations blow up through 50
    layers and every verdict saturates. Here BN statistics are re-estimated on real face crops
    (scikit-image's astronaut and LFW-like crops from public-domain images) and `linear1` is scaled so
    per-frame logits vary with a standard deviation of about `logit_std`. These weights are UNTRAINED.
    """
    from ..samples import calibration_faces

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = SeedModel(lstm_bias=lstm_bias)
    faces = torch.from_numpy(calibration_faces(n=24, seed=seed))
    with torch.no_grad():
        for m in model.model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration batches
        model.model.train()
        for chunk in faces.split(8):
            model.model(chunk)
        model.eval()
        model.linear1.weight.normal_(0.0, 1.0, generator=g)
        model.linear1.bias.normal_(0.0, 0.1, generator=g)
        from ..nets.seed_model import FrameClassifier

        logits = FrameClassifier(model)(faces)
        diff = logits[:, 0] - logits[:, 1]
        scale = logit_std / float(diff.std().clamp_min(1e-6))
        model.linear1.weight.mul_(scale)
    return model


def save_seed_checkpoint(model: SeedModel, path: str | Path, data_parallel: bool = False) -> Path:
    """Save in the seed's exact format: a plain state dict (optionally `module.`-prefixed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = model.state_dict()
    if data_parallel:
        sd = {f"module.{k}": v for k, v in sd.items()}
    torch.save(sd, path)
    return path

