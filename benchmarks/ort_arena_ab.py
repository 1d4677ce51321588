#!/usr/bin/env python
"""Interleaved A/B of onnxruntime's CPU memory settings on the shapes the Triton python models see: time per
round and what is left in the process after trimming. Chooses what the Triton models run with (see
dfserve/serving/memory.py) and is recorded as "ort_memory_ab" in benchmarks/results/<machine>/triton_soak.json.

    python benchmarks/ort_arena_ab.py                 # seeded random weights, 4 rounds
    python benchmarks/ort_arena_ab.py --models models/ --rounds 6 --no-write

Configurations (each its own session of the same file, run in alternating order each round):
  arena            onnxruntime's defaults (CPU arena, memory patterns): what the models ran before
  no_arena         arena and memory patterns off (releases everything after each run)
  arena_no_pattern arena on, memory patterns off (what the Triton models run, plus an idle shrink)
  arena_shrink     arena shrunk after every run (run option memory.enable_memory_arena_shrinkage)
"""
from __future__ import annotations

import argparse
import ctypes
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CONFIGS = ("arena", "no_arena", "arena_no_pattern", "arena_shrink")
SHAPES = {"face_detector.onnx": [(b, 3, h, 640) for b in (4, 16, 32) for h in (360, 363)],
          "frame_classifier.onnx": [(b, 3, 112, 112) for b in (8, 32, 64)]}


def session(path: Path, cfg: str, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as dfserve's ort_session
    so.enable_cpu_mem_arena = cfg != "no_arena"
    so.enable_mem_pattern = cfg in ("arena", "arena_shrink")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def uss_mb() -> float:
    import psutil

    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return round(psutil.Process().memory_full_info().uss / 2 ** 20, 1)


def measure(models: Path, rounds: int, threads: int, say) -> dict:
    import onnxruntime as ort

    shrink = ort.RunOptions()
    shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    out = {}
    for net, shapes in SHAPES.items():
        rng = np.random.default_rng(0)
        xs = [(rng.standard_normal(s) * 50).astype(np.float32) for s in shapes]
        res = {}
        sess = {}
        for c in CONFIGS:  # memory: each configuration alone, after one pass over every shape
            base = uss_mb()
            sess[c] = session(models / net, c, threads)
            name = sess[c].get_inputs()[0].name
            for x in xs:
                sess[c].run(None, {name: x}, shrink if c == "arena_shrink" else None)
            res[c] = {"kept_after_runs_mb": round(uss_mb() - base, 1)}
        times = dict.fromkeys(CONFIGS, 0.0)
        for r in range(rounds):
            for c in (CONFIGS if r % 2 == 0 else CONFIGS[::-1]):
                t = time.perf_counter()
                for x in xs:
                    sess[c].run(None, {name: x}, shrink if c == "arena_shrink" else None)
                times[c] += time.perf_counter() - t
        for c in CONFIGS:
            res[c]["s"] = round(times[c], 3)
            res[c]["time_vs_arena"] = round(times[c] / times["arena"], 3)
        out[net] = {"shapes": [list(s) for s in shapes], "rounds": rounds, **res}
        say(f"{net}: " + ", ".join(f"{c} x{res[c]['time_vs_arena']} (keeps {res[c]['kept_after_runs_mb']} MB)"
                                   for c in CONFIGS))
        del sess
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, help="folder made by `dfserve export` (default: seeded random weights)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime threads (default: the cores available)")
    ap.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/<machine>/triton_soak.json)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)

    from dfserve.bench.run import machine_info, machine_slug
    from dfserve.pipeline.runtimes.ort import default_threads

    def say(msg):
        print(f"ort_arena_ab: {msg}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="dfserve-ort-ab-") as tmp:
        models = args.models
        if models is None:
            from dfserve.export.onnx_export import export_models

            models = Path(tmp) / "models"
            export_models(models, random_init=True, seed=0)
        res = measure(models, args.rounds, args.threads or default_threads(), say)
    info = machine_info()
    doc_part = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "command": " ".join(["python", "benchmarks/ort_arena_ab.py"] + (sys.argv[1:] if argv is None else argv)),
                "configs": {"arena": "defaults (before)", "no_arena": "enable_cpu_mem_arena=False, no memory patterns",
                            "arena_no_pattern": "arena on, memory patterns off (the Triton models now)",
                            "arena_shrink": "arena shrunk after every run"},
                **res}
    print(json.dumps(doc_part, indent=1))
    if not args.no_write:
        out = args.out or (HERE / "results" / machine_slug(info) / "triton_soak.json")
        doc = json.loads(out.read_text()) if out.is_file() else {}
        doc["ort_memory_ab"] = doc_part
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1) + "\n")
        say(f"wrote ort_memory_ab to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
