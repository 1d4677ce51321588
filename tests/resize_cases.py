"""The golden set of the face resize: crop shapes and contents from seeded generators, and the script that
wrote `tests/data/resize_golden.json` with Pillow 12 (the last Pillow whose resize always runs the
horizontal pass first, as the seed projects' Pillow did).

Regenerate (only if the case list changes), with Pillow 12 in a throw-away environment:
    python3 -m venv /tmp/pil12 && /tmp/pil12/bin/pip install 'pillow==12.*' 'numpy<2'
    /tmp/pil12/bin/python tests/resize_cases.py
Each case stores the sha256 of its input (so a changed generator fails loudly instead of silently testing
other pixels) and of Pillow 12's 112x112 output.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).parent / "data" / "resize_golden.json"
SIZE = 112

# (height, width): the tall faces, wide boxes, tiny and thin crops, upscaling, exact size, frames
NAMED = [(170, 130), (230, 150), (144, 96), (120, 200), (390, 300), (1, 1), (1, 2), (2, 1), (2, 2), (1, 112),
         (112, 1), (3, 200), (200, 3), (2, 57), (20, 30), (50, 50), (111, 111), (60, 112), (112, 112), (112, 200),
         (200, 112), (113, 113), (224, 224), (360, 640), (720, 1280)]
KINDS = ("noise", "extremes", "smooth")


def cases() -> list:
    """[(height, width, kind, seed)]: the named shapes in every kind, 150 face-shaped crops (height/width
    1.1-1.45, width 60-400: where Pillow 13's pass order differs) and 40 of any shape up to 500 px."""
    out = [(h, w, kind, k) for k, (h, w) in enumerate(NAMED) for kind in KINDS]
    rng = np.random.default_rng(2027)
    for k in range(150):
        w = int(rng.integers(60, 401))
        out.append((int(round(w * rng.uniform(1.1, 1.45))), w, KINDS[k % 3], 1000 + k))
    for k in range(40):
        out.append((int(rng.integers(1, 501)), int(rng.integers(1, 501)), KINDS[k % 3], 2000 + k))
    return out


def crop(h: int, w: int, kind: str, seed: int) -> np.ndarray:
    """A uint8 [h,w,3] crop: uniform noise, only 0 and 255 (the clip's edge), or a gradient with noise."""
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if kind == "extremes":
        return (rng.integers(0, 2, (h, w, 3), dtype=np.uint8) * 255).astype(np.uint8)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255.0 / max(w - 1, 1), y * 255.0 / max(h - 1, 1), (x + y) % 256], -1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def main() -> None:
    import PIL
    from PIL import Image

    if not PIL.__version__.startswith("12."):
        raise SystemExit(f"the golden set is made with Pillow 12 (horizontal pass first); this is {PIL.__version__}")
    rows = []
    for h, w, kind, seed in cases():
        img = crop(h, w, kind, seed)
        out = np.asarray(Image.fromarray(img).resize((SIZE, SIZE), Image.BILINEAR))
        rows.append({"h": h, "w": w, "kind": kind, "seed": seed, "input": sha(img), "pillow12": sha(out)})
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({"pillow": PIL.__version__, "numpy": np.__version__, "size": SIZE, "cases": rows},
                                 indent=0) + "\n")
    print(f"{len(rows)} cases -> {GOLDEN}")


if __name__ == "__main__":
    main()
