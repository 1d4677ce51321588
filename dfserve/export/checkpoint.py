"""Loading seed checkpoints (plain or DataParallel state dicts) and making seeded random ones.

Seed checkpoints are `torch.save(model.state_dict(), "model_<acc>_acc_<N>_frames_final_data.pt")`.
They are loaded with `weights_only=True`: nothing but tensors is ever unpickled. The file name is
never parsed to choose a model; the keys and shapes decide.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Dict

import torch

from .. import spec
from ..errors import CheckpointError
from ..nets.seed_model import SeedModel

log = logging.getLogger(__name__)

EXPECTED_FORMAT = (
    "a seed state dict (torch.save(model.state_dict())) with keys 'model.0.weight' ... "
    "'model.7.2.bn3.*' (ResNeXt50_32x4d children minus avgpool/fc), 'lstm.weight_ih_l0' and "
    "'lstm.weight_hh_l0' [8192, 2048] (optionally 'lstm.bias_ih_l0'/'lstm.bias_hh_l0' [8192]), "
    "'linear1.weight' [2, 2048] and 'linear1.bias' [2]; a 'module.' prefix (DataParallel) is accepted"
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


def read_state_dict(path: str | Path) -> Dict[str, torch.Tensor]:
    """Read a checkpoint file as a flat {name: tensor} dict, tensors only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; expected {EXPECTED_FORMAT}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zips, not-a-checkpoint files
        raise CheckpointError(
            f"{path}: cannot be read as a weights-only state dict ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); expected {EXPECTED_FORMAT}. "
            "Whole pickled models are refused on purpose: save model.state_dict() instead."
        ) from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict; expected {EXPECTED_FORMAT}")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def load_seed_model(path: str | Path) -> SeedModel:
    """Build a SeedModel (eval mode) from a seed checkpoint, checking every key and shape."""
    sd = read_state_dict(path)
    lstm_bias = "lstm.bias_ih_l0" in sd or "lstm.bias_hh_l0" in sd
    model = SeedModel(lstm_bias=lstm_bias)
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd and not k.endswith(OPTIONAL_SUFFIXES)]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k}: {tuple(sd[k].shape)} (expected {tuple(expected[k].shape)})"
             for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_short(unexpected)}")
        if wrong:
            parts.append(f"wrong shapes: {_short(wrong)}")
        raise CheckpointError(f"{path}: not a seed checkpoint: {'; '.join(parts)}. Expected {EXPECTED_FORMAT}")
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

