"""Real images for calibration, validation and generated test videos (scikit-image, public domain).

No model hub or dataset download: scikit-image ships these images in its wheel.
"""
from __future__ import annotations

import numpy as np

from . import spec

# The astronaut's face in skimage.data.astronaut() (512x512), x1, y1, x2, y2, from the shipped
# RetinaFace ONNX; used to cut real face crops.
ASTRONAUT_FACE_BOX = (178, 57, 273, 177)


def astronaut_bgr() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[..., ::-1])


def camera_bgr() -> np.ndarray:
    """skimage.data.camera(): a man with a camera (512x512 grayscale) as BGR."""
    from skimage import data

    g = data.camera()
    return np.ascontiguousarray(np.stack([g, g, g], axis=-1))


def coffee_bgr() -> np.ndarray:
    """skimage.data.coffee(): a cup of coffee, no face."""
    from skimage import data

    return np.ascontiguousarray(data.coffee()[..., ::-1])


def normalize_faces(crops_bgr_uint8: np.ndarray) -> np.ndarray:
    """uint8 [N,112,112,3] BGR -> float32 [N,3,112,112], normalised with ImageNet mean/std."""
    x = crops_bgr_uint8.astype(np.float32) * (1.0 / 255.0)
    x -= np.asarray(spec.NORM_MEAN, np.float32)
    x /= np.asarray(spec.NORM_STD, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def resize_bgr(img: np.ndarray, size: int = spec.FACE_SIZE) -> np.ndarray:
    """PIL bilinear (antialiased) resize to size x size, as the seed's transforms.Resize did."""
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((size, size), Image.BILINEAR))


def astronaut_face_crops(n: int, seed: int = 0) -> np.ndarray:
    """n uint8 BGR 112x112 crops of the astronaut's face with jittered boxes (real face pixels)."""
    rng = np.random.default_rng(seed)
    img = astronaut_bgr()
    x1, y1, x2, y2 = ASTRONAUT_FACE_BOX
    out = []
    for _ in range(n):
        j = rng.integers(-12, 13, size=4)
        bx1, by1 = max(0, x1 + j[0]), max(0, y1 + j[1])
        bx2, by2 = min(img.shape[1], x2 + j[2]), min(img.shape[0], y2 + j[3])
        crop = img[by1:by2, bx1:bx2]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out.append(resize_bgr(crop))
    return np.stack(out)


def calibration_faces(n: int = 24, seed: int = 0) -> np.ndarray:
    """Normalised float32 [n,3,112,112] real crops: astronaut faces plus crops of other images."""
    rng = np.random.default_rng(seed + 1)
    faces = list(astronaut_face_crops(n - n // 3, seed))
    others = [camera_bgr(), coffee_bgr()]
    for k in range(n // 3):
        img = others[k % 2]
        s = int(rng.integers(96, 256))
        y = int(rng.integers(0, img.shape[0] - s))
        x = int(rng.integers(0, img.shape[1] - s))
        faces.append(resize_bgr(img[y:y + s, x:x + s]))
    return normalize_faces(np.stack(faces))
