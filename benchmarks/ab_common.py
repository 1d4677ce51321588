"""The interleaved A/B harness shared by the CPU benchmarks of issue 23 (detector_input_ab.py,
detector_input_threads.py, cpu_overlap.py): every configuration in its own process, rounds interleaved (the
order reversed every other round) so load from other work hits every configuration alike, u measured in
every round, medians reported."""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence


def cpu_seconds() -> float:
    """CPU seconds this process used so far, every thread (user + system)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def unit_u(models: str) -> dict:
    """u: onnxruntime fp32 classifier faces/s at batch 8 (all threads: its default), median of 7."""
    from dfserve.models import load_runtime, resolve_models
    from dfserve.samples import astronaut_face_crops, normalize_faces

    rt = load_runtime("onnxruntime", resolve_models(models=models), precision="fp32")
    x = normalize_faces(astronaut_face_crops(8, seed=5))
    rt.classify(x)
    ts = []
    for _ in range(7):
        t = time.perf_counter()
        rt.classify(x)
        ts.append(time.perf_counter() - t)
    return {"faces_per_s": 8 / statistics.median(ts)}


def timed_score(scorer: Callable, video: str) -> dict:
    """`scorer(policy)` -> an engine Scorer: one warm-up on 16 frames, then `--sample all` of `video` timed:
    frames/s, cores busy (process CPU seconds / wall) and the verdict."""
    from dfserve.pipeline.options import ScoreOptions
    from dfserve.pipeline.sampling import parse_policy

    list(scorer(ScoreOptions(sample=parse_policy("first:16"))).score([video]))  # warm-up (kernels, caches)
    c, t = cpu_seconds(), time.perf_counter()
    r = list(scorer(ScoreOptions(sample=parse_policy("all"))).score([video]))[0]
    dt, cpu = time.perf_counter() - t, cpu_seconds() - c
    return {"frames_per_s": r["frames_scored"] / dt, "cores_busy": cpu / dt, "p_fake": r["p_fake"]}


def child(script: str, models: str, video: str, *args, env: Dict[str, str] | None = None,
          timeout: float = 900) -> dict:
    """Run `script --models M --video V --one ARGS...` in its own process; its last stdout line is JSON."""
    cmd = [sys.executable, script, "--models", models, "--video", video, "--one", *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def interleaved(configs: Sequence[tuple], rounds: int, run: Callable, u: Callable) -> dict:
    """Each round: u(), then run(config) for every config (name first in the tuple), in reverse order every other
    round. Returns {"runs": {name: [result]}, "u": [faces/s], "loads": [load average after each round]}."""
    runs: Dict[str, List[dict]] = {c[0]: [] for c in configs}
    us, loads = [], [round(os.getloadavg()[0], 2)]
    for r in range(rounds):
        us.append(u()["faces_per_s"])
        for cfg in (configs if r % 2 == 0 else list(configs)[::-1]):
            x = run(cfg)
            runs[cfg[0]].append(x)
            busy = f", cores busy {x['cores_busy']:.2f}" if "cores_busy" in x else ""
            print(f"round {r + 1}: {cfg[0]}: {x['frames_per_s']:.1f} frames/s{busy}", file=sys.stderr, flush=True)
        loads.append(round(os.getloadavg()[0], 2))
        print(f"round {r + 1}: u {us[-1]:.1f} faces/s, load {loads[-1]}", file=sys.stderr, flush=True)
    return {"runs": runs, "u": us, "loads": loads}


def summary(ab: dict) -> dict:
    """Medians per configuration, in u of the median u."""
    u = statistics.median(ab["u"])
    out = {"u_faces_per_s": round(u, 1), "u_all": [round(v, 1) for v in ab["u"]], "load_average": ab["loads"],
           "configs": {}}
    for name, xs in ab["runs"].items():
        fps = [x["frames_per_s"] for x in xs]
        row = {"frames_per_s_median": round(statistics.median(fps), 2), "frames_per_s_all": [round(v, 2) for v in fps],
               "u": round(statistics.median(fps) / u, 3), "p_fake": sorted({x["p_fake"] for x in xs})}
        if all("cores_busy" in x for x in xs):
            row["cores_busy_median"] = round(statistics.median(x["cores_busy"] for x in xs), 2)
        if xs and "threads" in xs[0]:
            row["threads_det_cls"] = xs[0]["threads"]
        out["configs"][name] = row
    return out


def write(res: dict, out: str | None) -> None:
    """Print the result JSON and write it to `out` (its folder made) when given."""
    text = json.dumps(res, indent=2)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
