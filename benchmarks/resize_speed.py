"""Speed of the owned face resize against the Pillow call it replaced, for chunks of 16 face crops (issue 27).

    python benchmarks/resize_speed.py

Crops are cut from a 720p frame at face-box shapes (height/width 1.1-1.45) in three width ranges; each
timing is the best of 7 repeats of 10 chunks, one thread (OPENBLAS/OMP threads 1, torch 1 thread; Pillow's
resize is single-threaded). Pillow: `Image.fromarray(crop).resize((112, 112), BILINEAR)` per crop, what
contract.resize_bgr did; numpy: `resize_uint8` per crop; torch (cpu): `resize_crops_torch`, the whole chunk
in one batched call. Writes benchmarks/results/<machine>/resize_speed.json.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def best_ms(fn, repeats=7, inner=10):
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t) / inner)
    return round(best * 1e3, 3)


def main() -> int:
    import PIL
    import torch
    from PIL import Image

    from dfserve.bench.run import machine_info, machine_slug
    from dfserve.resize import resize_crops_torch, resize_uint8

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    ft = torch.from_numpy(frame)[None]
    rows = {}
    for lo, hi in ((96, 160), (130, 230), (200, 400)):
        tblr = []
        for _ in range(16):
            w = int(rng.integers(lo, hi))
            h = int(w * rng.uniform(1.1, 1.45))
            y, x = int(rng.integers(0, 720 - h)), int(rng.integers(0, 1280 - w))
            tblr.append((y, y + h, x, x + w))
        crops = [frame[t:b, l:r] for t, b, l, r in tblr]
        fidx = torch.zeros(16, dtype=torch.long)
        r = {"pillow_ms": best_ms(lambda: [np.asarray(Image.fromarray(np.ascontiguousarray(c)).resize(
                 (112, 112), Image.BILINEAR)) for c in crops]),
             "numpy_ms": best_ms(lambda: [resize_uint8(c) for c in crops]),
             "torch_cpu_batched_ms": best_ms(lambda: resize_crops_torch(ft, fidx, np.array(tblr)), repeats=3, inner=3)}
        r["numpy_over_pillow"] = round(r["numpy_ms"] / r["pillow_ms"], 2)
        rows[f"16 crops, width {lo}-{hi - 1}"] = r
        print(f"width {lo}-{hi - 1}: {r}")
    out_dir = ROOT / "benchmarks" / "results" / machine_slug(machine_info())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "resize_speed.json").write_text(json.dumps(
        {"pillow": PIL.__version__, "numpy": np.__version__, "torch": torch.__version__, "threads": 1,
         "load_note": "2 shared cores: timings vary with other work; the ratio is the figure", "chunks": rows},
        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
