"""perf_analyzer against the `deepfake_frames` ensemble, with real face frames as input data.

The binary ships in the tritonclient==2.51.0 wheel (installed into the venv's bin). On machines
without CUDA it needs libb64.so.0d and libcudart.so.12, which the nvidia-pytriton wheel carries
under hashed names: they are linked into a private folder put on LD_LIBRARY_PATH.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

import numpy as np

from ..errors import MissingDependencyError, ServerError

log = logging.getLogger(__name__)
FRAME_SHAPE = (360, 640, 3)


def perf_analyzer_binary() -> Path:
    cand = Path(sys.executable).parent / "perf_analyzer"
    if cand.is_file():
        return cand
    found = shutil.which("perf_analyzer")
    if found:
        return Path(found)
    raise MissingDependencyError("perf_analyzer not found; it ships in tritonclient==2.51.0: pip install 'dfserve[serve]'")


def _lib_dir(work: Path) -> Optional[Path]:
    import importlib.util

    found = importlib.util.find_spec("pytriton")  # located, not imported (see server._pytriton_install)
    if found is None or not found.submodule_search_locations:
        return None
    libs = Path(list(found.submodule_search_locations)[0]).parent / "nvidia_pytriton.libs"
    out = work / "lib"
    out.mkdir(parents=True, exist_ok=True)
    for pattern, name in (("libb64-*.so.0d", "libb64.so.0d"), ("libcudart-*.so.12*", "libcudart.so.12")):
        hits = sorted(libs.glob(pattern))
        if hits and not (out / name).exists():
            (out / name).symlink_to(hits[0])
    return out


def input_data(path: Path, n_frames: int = 4) -> Path:
    """perf_analyzer --input-data JSON: real frames of the astronaut's face (binary, base64)."""
    from ..samples import ASTRONAUT_BODY, astronaut_bgr

    from PIL import Image

    h, w, _ = FRAME_SHAPE
    img = astronaut_bgr()
    x1, y1, x2, y2 = ASTRONAUT_BODY
    body = img[y1:y2, x1:x2]
    data = []
    for k in range(n_frames):
        frame = np.full(FRAME_SHAPE, 90 + 20 * k, np.uint8)
        s = 0.8 * h / body.shape[0] * (0.9 + 0.1 * k)
        part = np.asarray(Image.fromarray(body).resize((int(body.shape[1] * s), int(body.shape[0] * s))))
        part = part[:h, : w - 40 * k]
        frame[: part.shape[0], 40 * k: 40 * k + part.shape[1]] = part
        data.append({"frames": {"b64": base64.b64encode(frame.tobytes()).decode(), "shape": list(FRAME_SHAPE)}})
    path.write_text(json.dumps({"data": data}))
    return path


def command(url: str, data: Path, batch: int, concurrency: str, measurement_ms: int = 4000) -> List[str]:
    return [str(perf_analyzer_binary()), "-m", "deepfake_frames", "-u", url, "-i", "grpc", "-b", str(batch),
            f"--concurrency-range={concurrency}", f"--input-data={data}", f"--shape=frames:{','.join(map(str, FRAME_SHAPE))}",
            f"--measurement-interval={measurement_ms}", "--percentile=99", "--stability-percentage=50",
            "--max-trials=6"]


def run_perf_analyzer(url: str, quick: bool = True, batch: int = 8, concurrency: Optional[str] = None,
                      csv: Optional[Path] = None) -> str:
    """Run the concurrency sweep; returns perf_analyzer's report (and writes its CSV if asked)."""
    with tempfile.TemporaryDirectory() as td:
        work = Path(td)
        data = input_data(work / "frames.json")
        cmd = command(url, data, batch, concurrency or ("1:2" if quick else "1:4"), 3000 if quick else 5000)
        if csv:
            cmd.append(f"-f={csv}")
        env = dict(os.environ)
        lib = _lib_dir(work)
        if lib:
            env["LD_LIBRARY_PATH"] = f"{lib}:{env.get('LD_LIBRARY_PATH', '')}"
        log.info("running: %s", " ".join(cmd))
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
        if r.returncode != 0:
            raise ServerError(f"perf_analyzer failed ({r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
        return r.stdout


def summarize(report: str, batch: int) -> List[dict]:
    """Rows of 'Concurrency: N, throughput: X infer/sec, latency Y usec' -> frames/s and p50/p99 ms."""
    rows = []
    for m in re.finditer(r"Concurrency: (\d+), throughput: ([\d.]+) infer/sec, latency (\d+) usec", report):
        rows.append({"concurrency": int(m.group(1)), "frames_per_s": round(float(m.group(2)), 2),
                     "p99_latency_ms": round(int(m.group(3)) / 1000, 1)})
    blocks = re.split(r"Request concurrency: ", report)[1:]
    for row, block in zip(rows, blocks):
        p50 = re.search(r"p50 latency: (\d+) usec", block)
        if p50:
            row["p50_latency_ms"] = round(int(p50.group(1)) / 1000, 1)
        row["batch"] = batch
    return rows
