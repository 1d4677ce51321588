"""Speed and memory of the owned resize (dfserve.resize, issue 27) against the Pillow call it replaced.

    python benchmarks/resize_speed.py [--samples 15] [--child-runs 3] [--before REV]

Side by side, one thread (OPENBLAS/OMP threads 1, torch 1 thread; Pillow's resize is single-threaded):

- chunks of 16 face crops cut from a 720p frame at face-box shapes (height/width 1.1-1.45) in three width
  ranges, resized to 112x112: Pillow 13 (`Image.fromarray(crop).resize((112, 112), BILINEAR)` per crop,
  what contract.resize_bgr did), numpy (`resize_uint8` per crop), torch on the CPU (`resize_crops_torch`,
  the chunk in one call), and with `--before REV` the numpy `resize_uint8` of git revision REV (loaded from
  `git show REV:dfserve/resize.py`) for an A/B in the same run. Each figure is the median over `--samples` timings of one chunk, the three
  implementations interleaved so that load from other work on the machine hits them alike;
- the torch detector-input downscale (`torch_rt.frames_to_detector`'s call: 16 1080p frames -> 360x640),
  time and peak memory, each run in a fresh subprocess (peak RSS growth over the frames already in memory,
  from getrusage), median of `--child-runs`.

Writes benchmarks/results/<machine>/resize_speed.json and resize_speed.md.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WIDTHS = ((96, 160), (130, 230), (200, 400))
FRAMES, FRAME_HW, DETECTOR_HW = 16, (1080, 1920), (360, 640)


def _ms(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def load_before(rev: str):
    """dfserve/resize.py as it was at git revision `rev`, imported as a separate module."""
    import importlib.util
    import tempfile

    src = subprocess.run(["git", "show", f"{rev}:dfserve/resize.py"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    src = src.replace("from . import spec", "from dfserve import spec").replace("from .errors", "from dfserve.errors")
    path = Path(tempfile.mkdtemp()) / "resize_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("resize_before", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["resize_before"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def chunks(samples: int, before=None) -> dict:
    import torch
    from PIL import Image

    from dfserve.resize import resize_crops_torch, resize_uint8

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    ft = torch.from_numpy(frame)[None]
    rows = {}
    for lo, hi in WIDTHS:
        tblr = []
        for _ in range(16):
            w = int(rng.integers(lo, hi))
            h = int(w * rng.uniform(1.1, 1.45))
            y, x = int(rng.integers(0, 720 - h)), int(rng.integers(0, 1280 - w))
            tblr.append((y, y + h, x, x + w))
        crops = [frame[t:b, l:r] for t, b, l, r in tblr]
        fidx, boxes = torch.zeros(16, dtype=torch.long), np.array(tblr)
        impl = {
            "pillow": lambda: [np.asarray(Image.fromarray(np.ascontiguousarray(c)).resize((112, 112), Image.BILINEAR))
                               for c in crops],
            "numpy": lambda: [resize_uint8(c) for c in crops],
            "torch_cpu": lambda: resize_crops_torch(ft, fidx, boxes),
        }
        if before is not None:
            impl["numpy_before"] = lambda: [before.resize_uint8(c) for c in crops]
        got = {k: np.stack(f()) if k != "torch_cpu" else f().numpy() for k, f in impl.items()}  # warm-up
        assert np.array_equal(got["numpy"], got["torch_cpu"]), "numpy and torch differ"
        assert before is None or np.array_equal(got["numpy"], got["numpy_before"]), "numpy before and now differ"
        times = {k: [] for k in impl}
        for _ in range(samples):
            for k, f in impl.items():
                times[k].append(_ms(f))
        r = {f"{k}_ms": round(statistics.median(v), 3) for k, v in times.items()}
        r["numpy_over_pillow"] = round(r["numpy_ms"] / r["pillow_ms"], 2)
        r["torch_cpu_over_pillow"] = round(r["torch_cpu_ms"] / r["pillow_ms"], 2)
        if before is not None:
            r["numpy_before_over_pillow"] = round(r["numpy_before_ms"] / r["pillow_ms"], 2)
        rows[f"16 crops, width {lo}-{hi - 1}"] = r
        print(f"width {lo}-{hi - 1}: {r}", flush=True)
    return rows


def detector_child() -> None:
    """One run in this process: 16 1080p frames -> 360x640 through resize_crops_torch; prints JSON."""
    import torch

    from dfserve.resize import resize_crops_torch

    torch.set_num_threads(1)
    frames = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (FRAMES,) + FRAME_HW + (3,), dtype=np.uint8))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tblr = np.tile(np.array([[0, FRAME_HW[0], 0, FRAME_HW[1]]], np.int64), (FRAMES, 1))
    ms = _ms(lambda: resize_crops_torch(frames, torch.arange(FRAMES), tblr, DETECTOR_HW))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"ms": round(ms, 1), "peak_rss_growth_mb": round((peak - base) / 1024, 1)}))


def detector(runs: int) -> dict:
    out = []
    for _ in range(runs):
        p = subprocess.run([sys.executable, __file__, "--detector-child"], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        out.append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(f"detector downscale: {out[-1]}", flush=True)
    return {"frames": f"{FRAMES} x {FRAME_HW[0]}x{FRAME_HW[1]} -> {DETECTOR_HW[0]}x{DETECTOR_HW[1]}",
            "torch_cpu_ms": statistics.median(r["ms"] for r in out),
            "peak_rss_growth_mb": statistics.median(r["peak_rss_growth_mb"] for r in out), "runs": out}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=15, help="timings per implementation and chunk (median)")
    ap.add_argument("--child-runs", type=int, default=3, help="detector-downscale subprocesses (median)")
    ap.add_argument("--before", metavar="REV", help="also time the numpy resize of this git revision (A/B)")
    ap.add_argument("--detector-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.detector_child:
        detector_child()
        return 0
    import cv2
    import PIL
    import torch

    from dfserve.bench.run import machine_info, machine_slug

    torch.set_num_threads(1)
    before = load_before(args.before) if args.before else None
    if args.before:  # a revision name such as HEAD means nothing once committed: record the commit
        args.before = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=ROOT, capture_output=True,
                                     text=True, check=True).stdout.strip()
    command = "python benchmarks/resize_speed.py" + (f" --before {args.before}" if args.before else "")
    result = {"pillow": PIL.__version__, "numpy": np.__version__, "torch": torch.__version__,
              "opencv": cv2.__version__, "threads": 1, "machine": machine_info(),
              "command": command, "samples": args.samples, "before": args.before,
              "load_note": "shared machine: timings vary with other work; medians of interleaved samples",
              "chunks": chunks(args.samples, before), "detector_downscale": detector(args.child_runs)}
    out_dir = ROOT / "benchmarks" / "results" / machine_slug(machine_info())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "resize_speed.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["# Face resize speed (benchmarks/resize_speed.py)", "",
             f"Command: `{command}`. Pillow {result['pillow']}, numpy {result['numpy']}, OpenCV {result['opencv']}, "
             f"torch {result['torch']}, one thread; medians of {args.samples} interleaved samples.", ""]
    b_head, b_rule = (f" numpy at {args.before} ms | its / Pillow |", "---|---|") if before else ("", "")
    lines += [f"| chunk | Pillow ms | numpy ms | torch cpu ms | numpy / Pillow | torch / Pillow |{b_head}",
              f"|---|---|---|---|---|---|{b_rule}"]
    for name, r in result["chunks"].items():
        b_cells = f" {r['numpy_before_ms']} | {r['numpy_before_over_pillow']} |" if before else ""
        lines.append(f"| {name} | {r['pillow_ms']} | {r['numpy_ms']} | {r['torch_cpu_ms']} | "
                     f"{r['numpy_over_pillow']} | {r['torch_cpu_over_pillow']} |{b_cells}")
    d = result["detector_downscale"]
    lines += ["", f"Detector input, torch cpu ({d['frames']}): {d['torch_cpu_ms']} ms, "
              f"peak RSS growth {d['peak_rss_growth_mb']} MB (median of {len(d['runs'])} subprocesses)."]
    (out_dir / "resize_speed.md").write_text("\n".join(lines) + "\n")
    print(f"-> {out_dir}/resize_speed.json, resize_speed.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
