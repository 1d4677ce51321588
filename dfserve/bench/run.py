"""`dfserve bench`: the seed pipeline and dfserve side by side, on the same videos and weights, in one run.

Writes results.json, results.md and PNG plots to benchmarks/results/<machine>/. Every
configuration runs in its own process (peak RSS is per configuration). Ratios are taken against
the seed pipeline measured in the same run.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List

import numpy as np

from .. import spec

log = logging.getLogger("dfserve.bench")


# ----------------------------------------------------------------------------------- machine info
def percentile(values, q: float, ndigits: int | None = None):
    """Nearest-rank percentile q (0-100) of values; None for no values; rounded to ndigits if given."""
    v = sorted(values)
    if not v:
        return None
    x = v[min(len(v) - 1, max(0, int(round(q / 100 * (len(v) - 1)))))]
    return x if ndigits is None else round(x, ndigits)


def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for dist in ("torch", "onnxruntime", "numpy", "av", "dlib-bin", "opencv-python-headless", "tritonclient",
                 "nvidia-pytriton", "pillow", "tensorrt", "pynvvideocodec"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    from .. import __version__

    versions["dfserve"] = __version__
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb, "gpu": gpu, "platform": platform.platform(),
            "versions": versions}


def machine_slug(info: dict) -> str:
    cpu = re.sub(r"[^a-z0-9]+", "-", (info["cpu"] or "cpu").lower()).strip("-")[:24]
    gpu = re.sub(r"[^a-z0-9]+", "-", info["gpu"].lower()).strip("-")[:24] if info["gpu"] else "nogpu"
    return f"{cpu}-{info['cores']}c-{gpu}"


# ------------------------------------------------------------------------------------------ inputs
def make_inputs(folder: Path, quick: bool) -> dict:
    from .. import samples

    folder.mkdir(parents=True, exist_ok=True)
    plan = [("720p_h264", 1280, 720, "h264", 0), ("720p_hevc", 1280, 720, "hevc", 1)]
    if not quick:
        plan += [("1080p_h264", 1920, 1080, "h264", 2), ("1080p_hevc", 1920, 1080, "hevc", 3),
                 ("720p_h264_b", 1280, 720, "h264", 4), ("1080p_h264_b", 1920, 1080, "h264", 5)]
    clips = []
    for name, w, h, codec, seed in plan:
        p = folder / f"{name}_10s.{'mp4' if codec == 'h264' else 'mkv'}"
        if not p.is_file():
            log.info("generating %s", p)
            samples.make_face_video(p, n_frames=300, width=w, height=h, fps=30, codec=codec, seed=seed)
        clips.append(str(p))
    long_s = 60 if quick else 600
    long_p = folder / f"long_{long_s}s_320x180.mp4"
    if not long_p.is_file():
        log.info("generating %s", long_p)
        samples.make_face_video(long_p, n_frames=long_s * 30, width=320, height=180, fps=30, codec="h264", seed=9,
                                zoom=(0.8, 1.1))
    return {"clips": clips, "long": str(long_p), "long_seconds": long_s}


def ensure_models(folder: Path, checkpoint: str | None) -> tuple:
    """(checkpoint path, models dir): the user's checkpoint, or seeded random weights (UNTRAINED)."""
    from ..export.checkpoint import random_seed_model, save_seed_checkpoint
    from ..models import resolve_models

    untrained = checkpoint is None
    if checkpoint is None:
        checkpoint = folder / "random_seed0_UNTRAINED.pt"
        if not checkpoint.is_file():
            save_seed_checkpoint(random_seed_model(0), checkpoint)
    os.environ.setdefault("DFSERVE_CACHE", str(folder / "cache"))
    resolved = resolve_models(checkpoint=Path(checkpoint))
    return str(checkpoint), str(resolved.models_dir), untrained


# ------------------------------------------------------------------------------------------- runs
def run_config(cfg: dict, timeout: float = 3600) -> dict:
    with tempfile.TemporaryDirectory() as td:
        cp, rp = Path(td) / "cfg.json", Path(td) / "res.json"
        cp.write_text(json.dumps(cfg))
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "dfserve.bench.worker", str(cp), str(rp)], capture_output=True,
                           text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"benchmark config {cfg['name']} failed:\n{r.stderr[-3000:]}")
        res = json.loads(rp.read_text())
        res["process_wall_s"] = time.perf_counter() - t
    return res


def summarize(name: str, kind: str, setting: str, res: dict) -> dict:
    vids = res["videos"]
    lat = np.array([v["seconds"] for v in vids], float)
    frames = sum(v["frames"] for v in vids)
    total = float(lat.sum())
    out = {"name": name, "kind": kind, "setting": setting, "videos": len(vids), "frames": frames,
           "seconds": round(total, 3), "videos_per_s": round(len(vids) / total, 4) if total else None,
           "frames_per_s": round(frames / total, 2) if total else None,
           "latency_p50_s": round(float(np.percentile(lat, 50)), 3) if len(lat) else None,
           "latency_p99_s": round(float(np.percentile(lat, 99)), 3) if len(lat) else None,
           "peak_rss_mb": round(res["peak_rss_mb"], 1), "peak_gpu_mem_mb": res.get("peak_gpu_mem_mb"),
           "per_video": vids}
    tp = res.get("throughput")
    if tp:
        out["batched_frames_per_s"] = round(tp["frames"] / tp["seconds"], 2)
        out["batched_videos_per_s"] = round(tp["videos"] / tp["seconds"], 4)
    return out


def batch_sweep(models_dir: str, sizes: List[int], repeats: int = 3, runtime: str = "onnxruntime") -> dict:
    """Classifier faces/s and detector images/s (640x360) by batch size, through the runtime interface."""
    from ..models import load_runtime, resolve_models

    rt = load_runtime(runtime, resolve_models(models=Path(models_dir)), batch=max(sizes))
    rng = np.random.default_rng(0)
    out = {"runtime": rt.name, "classifier_faces_per_s": {}, "detector_images_per_s_640x360": {}}

    def rate(fn, x, n):
        fn(x)  # warm-up
        t = time.perf_counter()
        for _ in range(repeats):
            fn(x)
        return round(n * repeats / (time.perf_counter() - t), 2)

    for b in sizes:
        out["classifier_faces_per_s"][b] = rate(rt.classify, rng.standard_normal((b, 3, 112, 112), dtype=np.float32), b)
        if b <= 16:
            y = rng.uniform(0, 255, (b, 3, 360, 640)).astype(np.float32)
            out["detector_images_per_s_640x360"][b] = rate(rt.detect, y, b)
    return out


def box_fidelity(models_dir: str, clips: List[str], seed_run: dict, n_frames: int, threads: int = 0) -> dict:
    """The engine's crops and verdicts against the seed run's, before (`--box retinaface`) and after the box
    mapping (`--box seed`), and with `--detector dlib` (bench/fidelity.py): box IoU and |dp_fake|."""
    from ..models import load_runtime, resolve_models
    from .fidelity import fidelity

    print(f"  fidelity: boxes and verdicts vs the seed pipeline (first {n_frames} frames) ...", file=sys.stderr,
          flush=True)
    resolved = resolve_models(models=Path(models_dir))
    rt = load_runtime("onnxruntime", resolved, threads=threads or 0)
    seed_p = {v["path"]: v["p_fake"] for v in seed_run["per_video"]}
    return fidelity(clips, rt, seed_p, n_frames, resolved.model_id)


def fidelity_markdown(fid) -> List[str]:
    """The report's fidelity section (`box_fidelity`'s result), shared by both bench reports."""
    if not fid:
        return []
    lines = ["", f"## Fidelity to the seed pipeline (first {fid['frames_per_video']} frames, {fid['videos']} "
                 "video(s), same weights, --no-face frame)", "",
             "| crops | box IoU mean | box IoU min | frames | mean abs dp_fake | max abs dp_fake |",
             "|---|---|---|---|---|---|"]
    for k, m in fid["modes"].items():
        lines.append(f"| {k} | {m['box_iou_mean']} | {m['box_iou_min']} | {m['frames_compared']} | "
                     f"{m['dp_fake_mean']} | {m['dp_fake_max']} |")
    return lines


def agreement(seed: dict, ours: dict) -> dict:
    pairs = [(s, o) for s, o in zip(seed["per_video"], ours["per_video"]) if s["label"] and o["label"]]
    if not pairs:
        return {"videos": 0}
    same = sum(s["label"] == o["label"] for s, o in pairs)
    diff = [abs(s["p_fake"] - o["p_fake"]) for s, o in pairs]
    return {"videos": len(pairs), "label_agreement": round(same / len(pairs), 4),
            "max_abs_p_fake_diff": round(max(diff), 6), "mean_abs_p_fake_diff": round(float(np.mean(diff)), 6)}


# ------------------------------------------------------------------------------------------- report
def write_report(out_dir: Path, result: dict) -> List[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / "results.json", out_dir / "results.md"]
    files[0].write_text(json.dumps(result, indent=1) + "\n")
    files[1].write_text(markdown(result))
    try:
        files += plots(out_dir, result)
    except ImportError as exc:
        log.warning("no plots (%s); install the 'bench' extra for matplotlib", exc)
    return files


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# dfserve benchmark — {m['cpu']}, {m['cores']} cores, GPU: {m['gpu'] or 'none'}", "",
             f"- date: {result['date']}", f"- command: `{result['command']}`",
             f"- weights: {'seeded random (UNTRAINED) — speed is what matters here' if result['untrained'] else 'user checkpoint'}",
             f"- versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items() if v)}",
             f"- inputs: {', '.join(Path(c).name for c in result['inputs']['clips'])}; long: {Path(result['inputs']['long']).name}",
             "", "| config | setting | videos | frames | frames/s | x seed | videos/s | p50 s | p99 s | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        ratio = r.get("ratio_frames_per_s")
        lines.append(f"| {r['name']} | {r['setting']} | {r['videos']} | {r['frames']} | {r['frames_per_s']} | "
                     f"{'' if ratio is None else f'{ratio:.2f}x'} | {r['videos_per_s']} | {r['latency_p50_s']} | "
                     f"{r['latency_p99_s']} | {r['peak_rss_mb']} |")
    base_n = max([int(r["setting"].split(":")[1]) for r in result["runs"] if r["kind"] == "seed"] or [100])
    lines += ["", f"Ratios compare frames/s against the seed pipeline at the same `first:N`; whole-video settings "
              f"(`all`, `fps:R`) are compared against the seed at `first:{base_n}` (the seed app never looks "
              "past its first N <= 100 frames).",
              "Per-video latency is measured one video at a time; below, all videos of a setting are scored in "
              "one call, so decode overlaps inference and frames of several videos share batches.", ""]
    for r in result["runs"]:
        if r.get("batched_frames_per_s"):
            lines.append(f"- {r['name']} `{r['setting']}`, all videos at once: {r['batched_frames_per_s']} frames/s, "
                         f"{r['batched_videos_per_s']} videos/s")
    gpu_runs = [r for r in result["runs"] if r.get("peak_gpu_mem_mb")]
    if gpu_runs:
        lines += ["", "Peak GPU memory: " + ", ".join(f"{r['name']} {r['setting']} {r['peak_gpu_mem_mb']} MB"
                                                    for r in gpu_runs)]
    lines += fidelity_markdown(result.get("fidelity"))
    lines += ["", "## Verdict agreement (seed vs dfserve, same weights, same first N frames)", "",
              "The seed finds faces with dlib HOG, dfserve with RetinaFace (boxes mapped to dlib's framing by "
              "default), so crops still differ slightly.", "",
              "| setting | videos | label agreement | max abs p_fake diff | mean abs p_fake diff |", "|---|---|---|---|---|"]
    for k, a in result["agreement"].items():
        if a.get("videos"):
            lines.append(f"| {k} | {a['videos']} | {a['label_agreement']} | {a['max_abs_p_fake_diff']} | "
                         f"{a['mean_abs_p_fake_diff']} |")
    sw = result.get("batch_sweep", {})
    if sw:
        lines += ["", "## Throughput by batch size (onnxruntime CPU)", "", "| batch | classifier faces/s | detector images/s (640x360) |",
                  "|---|---|---|"]
        for b, v in sw["classifier_faces_per_s"].items():
            lines.append(f"| {b} | {v} | {sw['detector_images_per_s_640x360'].get(b, '')} |")
    if result.get("perf_analyzer_rows"):
        lines += ["", "## perf_analyzer (Triton cpu flavor, ensemble `deepfake_frames`, 640x360 face frames)", "",
                  "| concurrency | batch | frames/s | p50 ms | p99 ms |", "|---|---|---|---|---|"]
        for r in result["perf_analyzer_rows"]:
            lines.append(f"| {r['concurrency']} | {r['batch']} | {r['frames_per_s']} | {r.get('p50_latency_ms')} | "
                         f"{r['p99_latency_ms']} |")
    return "\n".join(lines) + "\n"


def plots(out_dir: Path, result: dict) -> List[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    sw = result.get("batch_sweep")
    if sw:
        fig, ax = plt.subplots(figsize=(6, 4))
        bs = [int(b) for b in sw["classifier_faces_per_s"]]
        ax.plot(bs, list(sw["classifier_faces_per_s"].values()), "o-", label="classifier (faces/s)")
        db = [int(b) for b in sw["detector_images_per_s_640x360"]]
        ax.plot(db, list(sw["detector_images_per_s_640x360"].values()), "s-", label="detector 640x360 (images/s)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("items / s")
        ax.set_title("onnxruntime CPU throughput vs batch size")
        ax.legend()
        files.append(_save(plt, fig, ax, out_dir / "throughput_vs_batch.png"))
    fig, ax = plt.subplots(figsize=(8, 4))
    runs = [r for r in result["runs"] if r["per_video"]]
    ax.boxplot([[v["seconds"] for v in r["per_video"]] for r in runs], showfliers=True)
    ax.set_xticks(range(1, len(runs) + 1), [f"{r['name']}\n{r['setting']}" for r in runs], rotation=30, fontsize=7)
    ax.set_ylabel("seconds per video")
    ax.set_yscale("log")
    ax.set_title("per-video latency")
    files.append(_save(plt, fig, ax, out_dir / "latency.png"))
    return files


def _save(plt, fig, ax, path: Path) -> Path:
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------- main
def run(args) -> int:
    quick = args.quick
    work = Path(args.workdir)
    info = machine_info()
    out_dir = Path(args.out) / machine_slug(info) if args.out else Path("benchmarks/results") / machine_slug(info)
    t_start = time.perf_counter()
    print(f"machine: {info['cpu']} x{info['cores']}, GPU {info['gpu'] or 'none'}; results -> {out_dir}", file=sys.stderr)
    inputs = make_inputs(work / "videos", quick)
    checkpoint, models_dir, untrained = ensure_models(work, args.checkpoint)
    clips = inputs["clips"]
    server = None
    if args.triton and not args.server:
        from ..serving.repo import build_repo
        from ..serving.server import TritonServer

        repo = build_repo(work / "model_repository", "cpu", models_dir)
        server = TritonServer(repo).start()
        args.server = server.grpc_url
        print(f"tritonserver (cpu flavor) on {args.server}", file=sys.stderr)
    try:
        return _run(args, quick, info, out_dir, t_start, inputs, checkpoint, models_dir, untrained, clips)
    finally:
        if server is not None:
            server.stop()


def _run(args, quick, info, out_dir, t_start, inputs, checkpoint, models_dir, untrained, clips) -> int:
    seed_ns = [20] if quick else [20, 100]
    runs = []

    def go(name, kind, setting, videos, **extra):
        cfg = {"name": name, "kind": kind, "videos": videos, "checkpoint": checkpoint, "models": models_dir,
               "sample": setting, "threads": args.threads or None, **extra}
        if kind == "seed":
            cfg["frames"] = int(setting.split(":")[1])
        print(f"  running {name} {setting} on {len(videos)} video(s) ...", file=sys.stderr, flush=True)
        r = summarize(name, kind, setting, run_config(cfg))
        print(f"    {r['frames_per_s']} frames/s, p50 {r['latency_p50_s']} s, peak RSS {r['peak_rss_mb']} MB",
              file=sys.stderr, flush=True)
        runs.append(r)
        return r

    seed_runs = {}
    for n in seed_ns:
        seed_runs[n] = go("seed", "seed", f"first:{n}", clips)
    fid = box_fidelity(models_dir, clips, seed_runs[min(seed_ns)], min(seed_ns), args.threads)
    kinds = [("dfserve-embedded", "embedded", {})]
    if info["gpu"]:  # the GPU path, and the seed's model on the same GPU (eager fp32) for reference
        for n in seed_ns:
            go("seed (model on GPU)", "seed", f"first:{n}", clips, device="cuda")
        kinds.append(("dfserve-gpu", "gpu", {"device": "cuda"}))
    if args.server:
        kinds.append(("dfserve-triton", "triton", {"server": args.server}))
    agree = {}
    for name, kind, extra in kinds:
        for n in seed_ns:
            r = go(name, kind, f"first:{n}", clips, **extra)
            r["ratio_frames_per_s"] = r["frames_per_s"] / seed_runs[n]["frames_per_s"]
            agree[f"{name} first:{n}"] = agreement(seed_runs[n], r)
        base = seed_runs[max(seed_ns)]["frames_per_s"]
        for setting in ("all", "fps:5"):
            r = go(name, kind, setting, clips, **extra)
            r["ratio_frames_per_s"] = r["frames_per_s"] / base
        if kind in ("embedded", "gpu"):
            r = go(name + " (long video)", kind, "all", [inputs["long"]], throughput=False, **extra)
            r["ratio_frames_per_s"] = r["frames_per_s"] / base
        if kind == "triton":
            r = go("dfserve-triton deepfake_video", "triton-video", "all", clips, **extra)
            r["ratio_frames_per_s"] = r["frames_per_s"] / base
    for r in runs:
        r.setdefault("ratio_frames_per_s", 1.0 if r["kind"] == "seed" else None)
    sweep = batch_sweep(models_dir, [1, 8, 32] if quick else [1, 4, 8, 16, 32, 64])
    pa = pa_rows = None
    if args.server and args.perf_analyzer:
        from ..serving.perf import run_perf_analyzer, summarize as pa_summarize

        print("  running perf_analyzer concurrency sweep ...", file=sys.stderr, flush=True)
        pa = run_perf_analyzer(args.server, quick=quick, batch=8)
        pa_rows = pa_summarize(pa, 8)
        pa = pa[pa.rfind("Inferences/Second vs. Client"):] if "Inferences/Second" in pa else pa[-3000:]
    result = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "command": "dfserve bench " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 1
              else "dfserve bench", "quick": quick, "machine": info, "untrained": untrained,
              "inputs": inputs, "runs": runs, "agreement": agree, "fidelity": fid, "batch_sweep": sweep, "perf_analyzer": pa, "perf_analyzer_rows": pa_rows,
              "total_seconds": round(time.perf_counter() - t_start, 1)}
    files = write_report(out_dir, result)
    print(markdown(result), file=sys.stderr)
    print("wrote " + ", ".join(str(f) for f in files), file=sys.stderr)
    return 0
