"""The seed reference predictor: the seed's own preprocessing and forward, eager PyTorch.

Ground truth for tests and benchmarks. Frames are BGR uint8 (as OpenCV decodes them); each is
turned into a PIL image, resized to 112x112 (PIL bilinear, antialiased), converted to a tensor in
[0, 1] and normalised with the ImageNet statistics — channel order left BGR, as the seed did.
The whole clip then goes through `SeedModel.forward` as [1, N, 3, 112, 112].
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .. import spec
from ..pipeline.aggregate import Verdict, verdict_from_logits
from ..contract import normalize_faces, resize_bgr
from ..nets.seed_model import SeedModel


def seed_transform(frames_bgr: Sequence[np.ndarray]) -> torch.Tensor:
    """The seed's ToPILImage -> Resize((112,112)) -> ToTensor -> Normalize, on BGR frames."""
    crops = np.stack([resize_bgr(f) for f in frames_bgr])
    return torch.from_numpy(normalize_faces(crops))


class SeedReference:
    """Runs the seed's forward exactly as written (LSTM not batch-first, heads `mean` / `last`)."""

    def __init__(self, model: SeedModel):
        self.model = model.eval()

    @torch.no_grad()
    def predict_tensor(self, faces: torch.Tensor, head: str = spec.DEFAULT_HEAD) -> Verdict:
        """faces: [N, 3, 112, 112] normalised. Returns the video verdict."""
        dev = next(self.model.parameters()).device
        _, logits = self.model(faces.unsqueeze(0).to(dev), head=head)
        return verdict_from_logits(logits[0].float().cpu().numpy())

    def predict_frames(self, frames_bgr: Sequence[np.ndarray], head: str = spec.DEFAULT_HEAD) -> Verdict:
        """frames: BGR uint8 images (face crops, or whole frames where the seed found no face)."""
        if len(frames_bgr) == 0:
            raise ValueError("the seed reference needs at least one frame")
        return self.predict_tensor(seed_transform(frames_bgr), head)


# ------------------------------------------------------------------------------------------------
# The seed forward in float64: the truth exports are validated against (see dfserve.spec).
# ------------------------------------------------------------------------------------------------
class SeedForward:
    """The seed's forward on one clip of face crops, run through the seed's own modules in `dtype`.

    The ResNeXt backbone runs once over all frames; `verdict_logits(head, n)` then applies the seed's
    LSTM + head to the first n frames exactly as `SeedModel.forward` does ([1, n, 2048] into an LSTM
    that is not batch-first, mean over dim 1 or the last frame, then linear1). Because every frame gets
    its own LSTM step from a zero state, the prefix of n frames gives what the seed gives for an
    n-frame clip.
    """

    def __init__(self, model: SeedModel, faces: torch.Tensor, dtype: torch.dtype = torch.float64):
        import copy

        m = copy.deepcopy(model).to(dtype).eval()
        with torch.no_grad():
            x = faces.to(dtype)
            n = x.shape[0]
            feats = m.avgpool(m.model(x)).view(1, n, spec.FEATURE_DIM)
            x_lstm, _ = m.lstm(feats, None)
            self.h = x_lstm[0]  # [n, 2048] per-frame hidden states
            self.frame_logits = m.linear1(self.h).numpy().astype(np.float64)  # [n, 2]
            w, b = m.linear1.weight.abs(), m.linear1.bias.abs()
            # the scale float32 rounding works at, per frame and class (spec: S_c)
            self.scale = (self.h.abs() @ w.T + b).numpy().astype(np.float64)
        self._m = m

    @torch.no_grad()
    def verdict_logits(self, head: str, n: int) -> np.ndarray:
        h = self.h[:n]
        pooled = torch.mean(h, dim=0) if head == "mean" else h[-1]
        if head not in spec.HEADS:
            raise ValueError(f"head must be one of {spec.HEADS}, got {head!r}")
        return self._m.linear1(pooled).numpy().astype(np.float64)


def float64_truth(model: SeedModel, faces) -> SeedForward:
    """The seed forward in float64 on faces [N, 3, 112, 112] (numpy or torch, normalised)."""
    if isinstance(faces, np.ndarray):
        faces = torch.from_numpy(faces)
    return SeedForward(model, faces, torch.float64)
