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
