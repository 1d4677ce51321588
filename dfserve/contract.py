"""The seed's preprocessing contract, exactly as its apps and training did it (see DESIGN.md).

Frames are BGR (OpenCV decode); a face crop is resized to 112x112 with the seed-era Pillow's
antialiased bilinear filter (`dfserve.resize`: horizontal pass first, 22-bit fixed point; bit-exact,
whatever Pillow is installed), scaled to 0..1 and normalised with the ImageNet RGB statistics applied
to the BGR channels. Every runtime's preprocessing is tested against these functions.
"""
from __future__ import annotations

import numpy as np

from . import spec
from .resize import resize_uint8


def normalize_faces(crops_bgr_uint8: np.ndarray) -> np.ndarray:
    """uint8 [N,112,112,3] BGR -> float32 [N,3,112,112], normalised with ImageNet mean/std."""
    x = crops_bgr_uint8.astype(np.float32) * (1.0 / 255.0)
    x -= np.asarray(spec.NORM_MEAN, np.float32)
    x /= np.asarray(spec.NORM_STD, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def resize_bgr(img: np.ndarray, size: int = spec.FACE_SIZE) -> np.ndarray:
    """uint8 [H,W,3] -> [size,size,3]: the seed's transforms.Resize on a PIL image, as the seed's Pillow
    computed it (dfserve.resize; no Pillow call)."""
    return resize_uint8(img, size)
