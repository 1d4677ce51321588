"""`dfserve bench --runtimes LIST [--precisions LIST]`: CPU runtimes x precisions, side by side in one run.

On the same generated 10-s 30-fps face videos (720p H.264; without --quick also 1080p) and the same
weights, measures:

1. end to end `--sample all` frames/s of the seed pipeline (its own setting: first 20 frames), dfserve
   fp32 onnxruntime (the previous default path), and every requested runtime x precision; each
   configuration in its own process (its own peak RSS), rounds interleaved so every configuration sees
   the same load, medians reported; with the time spent inside the classifier and the detector;
2. classifier faces/s (batch 8, 32) and detector frames/s at the 720p detection size (batch 8, 16);
3. beside speed, the drift each precision's export recorded in metadata.json, and |dp_fake| of each
   configuration's video verdict against the fp32 onnxruntime one;
4. with --long SECONDS: one long 720p video scored by the fastest fp32 runtime, for its frames/s and
   peak RSS (memory must stay flat in video length).

Writes cpu_runtimes.json, cpu_runtimes.md and cpu_runtimes.png to <out>/<machine>/.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from .run import ensure_models, machine_info, machine_slug, run_config

log = logging.getLogger("dfserve.bench")

BASELINE = ("onnxruntime", "fp32")  # the previous default path: ratios are also taken against it
SEED_FRAMES = 20


def combos(runtimes: List[str], precisions: List[str]) -> List[Tuple[str, str]]:
    """Runtime x precision pairs that exist (bf16 is an OpenVINO compile hint), the baseline first."""
    out = [BASELINE]
    for rt in runtimes:
        for p in precisions:
            if (rt, p) not in out and not (p == "bf16" and rt != "openvino"):
                out.append((rt, p))
    return out


def label(rt: str, p: str) -> str:
    return f"dfserve {p} {rt}" + (" (previous default)" if (rt, p) == BASELINE else "")


# ------------------------------------------------------------------------------------- micro benchmarks
def _rate(fn, x, n_items: int, reps: int) -> float:
    fn(x)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn(x)
        ts.append(time.perf_counter() - t)
    return n_items / statistics.median(ts)


def micro(models: Path, pairs: List[Tuple[str, str]], rounds: int, reps: int = 3) -> dict:
    """Classifier faces/s and detector frames/s (640x360) per runtime x precision, rounds interleaved."""
    from ..models import load_runtime, resolve_models
    from ..pipeline.faces import detector_input
    from ..samples import astronaut_bgr, astronaut_face_crops, normalize_faces

    faces = normalize_faces(astronaut_face_crops(32, seed=5))
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[100:612, 400:912] = astronaut_bgr()
    det_x, _ = detector_input([frame] * 16, 640)
    rts = {pr: load_runtime(pr[0], resolve_models(models=models), batch=32, precision=pr[1]) for pr in pairs}
    cls: Dict[str, dict] = {f"{rt} {p}": {8: [], 32: []} for rt, p in pairs}
    det: Dict[str, dict] = {f"{rt} {p}": {8: [], 16: []} for rt, p in pairs}
    for r in range(rounds):
        for rt, p in pairs:
            for b in (8, 32):
                cls[f"{rt} {p}"][b].append(_rate(rts[(rt, p)].classify, faces[:b], b, reps))
            for b in (8, 16):
                det[f"{rt} {p}"][b].append(_rate(rts[(rt, p)].detect, det_x[:b], b, reps))
        print(f"  micro round {r + 1}/{rounds} done", file=sys.stderr, flush=True)

    def med(d):
        return {k: {str(b): round(statistics.median(v), 1) for b, v in bs.items()} for k, bs in d.items()}

    return {"classifier_faces_per_s": med(cls), "detector_frames_per_s_640x360": med(det)}


# ------------------------------------------------------------------------------------------------ runs
def _e2e(models: str, rt: str, p: str, video: str, threads: int) -> dict:
    res = run_config({"name": label(rt, p), "kind": "embedded", "videos": [video], "models": models,
                      "runtime": rt, "precision": p, "sample": "all", "threads": threads or None,
                      "profile": True, "warmup": True, "throughput": False}, timeout=3600)
    v = res["videos"][0]
    if v["error"]:
        raise RuntimeError(f"{label(rt, p)} on {video}: {v['error']}")
    return {"frames": v["frames"], "seconds": v["seconds"], "p_fake": v["p_fake"], "profile": v["profile"],
            "runtime": v.get("runtime"), "precision": v.get("precision"), "peak_rss_mb": res["peak_rss_mb"]}


def _median_run(rs: List[dict]) -> dict:
    return sorted(rs, key=lambda r: r["frames"] / r["seconds"])[len(rs) // 2]


def end_to_end(models: str, checkpoint: str, videos: Dict[str, str], pairs, rounds: int, threads: int,
               seed: bool, load: list) -> dict:
    out = {}
    for vid, path in videos.items():
        runs: Dict[Tuple[str, str], list] = {pr: [] for pr in pairs}
        for r in range(rounds):
            for rt, p in pairs:
                x = _e2e(models, rt, p, path, threads)
                runs[(rt, p)].append(x)
                print(f"  {vid} round {r + 1}/{rounds}: {label(rt, p)}: {x['frames'] / x['seconds']:.1f} frames/s",
                      file=sys.stderr, flush=True)
            load.append(round(os.getloadavg()[0], 2))
        rows = {}
        if seed:
            s = run_config({"name": "seed", "kind": "seed", "videos": [path], "checkpoint": checkpoint,
                            "frames": SEED_FRAMES, "threads": threads or None})
            v = s["videos"][0]
            rows[f"seed pipeline (first {SEED_FRAMES} frames)"] = {
                "frames_per_s": v["frames"] / v["seconds"], "peak_rss_mb": s["peak_rss_mb"],
                "profile": {"classify_s": round(v["model_s"], 3), "detect_s": round(v["detect_s"], 3),
                            "decode_s": round(v["decode_s"], 3)}}
        ref_p = statistics.median(r["p_fake"] for r in runs[BASELINE])
        for (rt, p), rs in runs.items():
            m = _median_run(rs)
            rows[label(rt, p)] = {"runtime": rt, "precision": p, "frames_per_s": m["frames"] / m["seconds"],
                                  "frames": m["frames"], "seconds": m["seconds"],
                                  "all_frames_per_s": [round(x["frames"] / x["seconds"], 2) for x in rs],
                                  "profile": m["profile"], "peak_rss_mb": m["peak_rss_mb"], "p_fake": m["p_fake"],
                                  "dp_fake_vs_fp32": abs(m["p_fake"] - ref_p) if m["p_fake"] is not None else None}
        out[vid] = rows
    return out


def fastest_fp32(e2e: dict) -> str:
    """The runtime with the best median fp32 frames/s over the videos."""
    best: Dict[str, list] = {}
    for rows in e2e.values():
        for r in rows.values():
            if r.get("precision") == "fp32":
                best.setdefault(r["runtime"], []).append(r["frames_per_s"])
    return max(best, key=lambda k: statistics.median(best[k]))


def long_video(models: str, rt: str, work: Path, seconds: int, threads: int) -> dict:
    from .. import samples

    path = work / f"long_720p_h264_{seconds}s.mp4"
    if not path.is_file():
        print(f"  generating {path} ({seconds} s of 720p)...", file=sys.stderr, flush=True)
        samples.make_face_video(path, n_frames=seconds * 30, width=1280, height=720, fps=30, codec="h264", seed=7)
    x = _e2e(models, rt, "fp32", str(path), threads)
    return {"video": path.name, "seconds_of_video": seconds, "runtime": rt, "precision": "fp32",
            "frames": x["frames"], "frames_per_s": round(x["frames"] / x["seconds"], 2),
            "wall_s": round(x["seconds"], 1), "peak_rss_mb": round(x["peak_rss_mb"], 1), "profile": x["profile"]}


# ------------------------------------------------------------------------------------------- report
def markdown(res: dict) -> str:
    m = res["machine"]
    L = [f"# CPU runtimes x precisions ({res['date']})", "",
         f"Machine: {m['cpu']}, {m['cores']} cores, GPU: {m['gpu'] or 'none'}. Command: `{res['command']}`. "
         f"Weights: {res['weights']} (speed and drift only). Ratios come from configurations measured in the same "
         f"run, interleaved, medians of {res['rounds']} round(s); load average samples: "
         f"{res['load_average_samples']}.", "",
         "Columns `classifier s` / `detector s`: time inside the runtime's classify / detect calls (they overlap "
         "each other and decoding: the engine runs them in two threads). Seed: its own setting (first "
         f"{SEED_FRAMES} frames, OpenCV decode, dlib HOG at full resolution, eager fp32).", ""]
    for vid, e2e in res["end_to_end"].items():
        base = e2e.get(label(*BASELINE), {}).get("frames_per_s")
        seed = next((r["frames_per_s"] for k, r in e2e.items() if k.startswith("seed")), None)
        L += [f"## End to end, `--sample all`, {vid}", "",
              "| pipeline | frames/s | x seed | x previous default | classifier s | detector s | peak RSS MB | "
              "verdict \\|dp_fake\\| vs fp32 onnxruntime |", "|---|---|---|---|---|---|---|---|"]
        for name, r in e2e.items():
            fps, pr = r["frames_per_s"], r.get("profile", {})
            dp = r.get("dp_fake_vs_fp32")
            L.append(f"| {name} | {fps:.1f} | " + (f"{fps / seed:.1f}x" if seed else "") + " | "
                     + (f"{fps / base:.2f}x" if base and "seed" not in name else "") + " | "
                     + f"{pr.get('classify_s', '')} | {pr.get('detect_s', '')} | {r['peak_rss_mb']:.0f} | "
                     + ("" if dp is None else f"{dp:.1e}") + " |")
        L.append("")
    if res.get("long_video"):
        lv = res["long_video"]
        L += [f"## Long video: {lv['seconds_of_video']} s of 720p H.264, `--sample all`, {lv['runtime']} fp32", "",
              f"{lv['frames']} frames in {lv['wall_s']} s ({lv['frames_per_s']} frames/s), peak RSS "
              f"{lv['peak_rss_mb']:.0f} MB (the 10-s videos above: see their peak RSS column).", ""]
    mc = res["micro"]
    b0 = mc["classifier_faces_per_s"]["onnxruntime fp32"]["8"]
    d0 = mc["detector_frames_per_s_640x360"]["onnxruntime fp32"]["8"]
    L += ["## Classifier faces/s (ResNeXt50 + LSTM, 112x112, real face crops)", "",
          "| runtime precision | batch 8 | batch 32 | x onnxruntime fp32 (b8) |", "|---|---|---|---|"]
    L += [f"| {k} | {v['8']} | {v['32']} | {v['8'] / b0:.2f}x |" for k, v in mc["classifier_faces_per_s"].items()]
    L += ["", "## Detector frames/s (RetinaFace-MobileNet0.25 at 640x360, the 720p detection size)", "",
          "OpenVINO runs the detector in bf16 for the bf16 and int8 precisions, in fp32 for fp32.", "",
          "| runtime precision | batch 8 | batch 16 | x onnxruntime fp32 (b8) |", "|---|---|---|---|"]
    L += [f"| {k} | {v['8']} | {v['16']} | {v['8'] / d0:.2f}x |"
          for k, v in mc["detector_frames_per_s_640x360"].items()]
    L += ["", "## Drift against fp32 (recorded by the export in metadata.json)", "",
          f"Validation crops: {res['drift_crops']}. Seeded random weights are chaotic (labels of frames near "
          "p=0.5 flip under tiny changes); the features' cosine similarity is the steadier measure.", "",
          "| precision | runtime | frame max \\|dp\\| | frame mean \\|dp\\| | frame labels | video@10 max \\|dp\\| | "
          "video@100 max \\|dp\\| | video@100 labels | feature cosine min / mean |",
          "|---|---|---|---|---|---|---|---|---|"]
    for p, e in res["drift"].items():
        for rt, d in e.get("drift", {}).items():
            pf, c = d["per_frame"], d["features_cosine"]
            v10, v100 = d["per_video"]["mean@10"], d["per_video"]["mean@100"]
            L.append(f"| {p} | {rt} | {pf['max_abs_dp_fake']:.1e} | {pf['mean_abs_dp_fake']:.1e} | "
                     f"{pf['label_agreement']:.1%} | {v10['max_abs_dp_fake']:.1e} | {v100['max_abs_dp_fake']:.1e} | "
                     f"{v100['label_agreement']:.1%} | {c['min']:.4f} / {c['mean']:.4f} |")
    return "\n".join(L) + "\n"


def plot(res: dict, path: Path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("no plot: install the 'bench' extra for matplotlib")
        return None
    vids = list(res["end_to_end"])
    fig, axes = plt.subplots(1, len(vids), figsize=(7 * len(vids), 4), squeeze=False)
    for ax, vid in zip(axes[0], vids):
        e2e = res["end_to_end"][vid]
        names = list(e2e)
        ax.barh(names, [e2e[n]["frames_per_s"] for n in names], color="tab:blue")
        ax.set_xlabel("frames/s (--sample all)")
        ax.set_title(f"{vid}, {res['machine']['cores']} cores")
        ax.invert_yaxis()
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------- main
def parse_list(text: str, allowed, what: str) -> List[str]:
    from ..errors import UsageError

    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if not items or bad:
        raise UsageError(f"--{what}: expected a comma-separated subset of {','.join(allowed)}, got {text!r}")
    return items


def run(args) -> int:
    from .. import samples
    from ..export.precision import export_precisions
    from ..pipeline.precisions import PRECISIONS

    runtimes = parse_list(args.runtimes, ("onnxruntime", "openvino"), "runtimes")
    precisions = parse_list(args.precisions, PRECISIONS, "precisions")
    pairs = combos(runtimes, precisions)
    rounds = args.rounds or (1 if args.quick else 3)
    t_start = time.perf_counter()
    info = machine_info()
    from importlib import metadata as _md

    for dist in ("openvino", "nncf"):
        try:
            info["versions"][dist] = _md.version(dist)
        except _md.PackageNotFoundError:
            info["versions"][dist] = None
    out_dir = Path(args.out or "benchmarks/results") / machine_slug(info)
    work = Path(args.workdir) / "runtimes"
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {info['cpu']} x{info['cores']}; {len(pairs)} configurations x {rounds} round(s); "
          f"results -> {out_dir}", file=sys.stderr, flush=True)
    checkpoint, models, untrained = ensure_models(work, args.checkpoint)
    meta = json.loads((Path(models) / "metadata.json").read_text())
    missing = [p for p in precisions if p != "fp32" and p not in meta.get("precisions", {})]
    if missing:
        print(f"writing the precision variants {','.join(missing)} (dfserve export --precision)...",
              file=sys.stderr, flush=True)
        export_precisions(Path(models), sorted(set(meta.get("precisions", {})) | set(missing)), force=untrained)
        meta = json.loads((Path(models) / "metadata.json").read_text())
    plan = [("720p", 1280, 720)] + ([] if args.quick else [("1080p", 1920, 1080)])
    videos = {}
    for name, w, h in plan:
        p = work / f"{name}_h264_10s.mp4"
        if not p.is_file():
            samples.make_face_video(p, n_frames=300, width=w, height=h, fps=30, codec="h264")
        videos[f"{name} H.264 10 s (300 frames)"] = str(p)
    load = [round(os.getloadavg()[0], 2)]
    print("micro benchmarks...", file=sys.stderr, flush=True)
    mic = micro(Path(models), pairs, rounds)
    e2e = end_to_end(models, checkpoint, videos, pairs, rounds, args.threads, not args.no_seed, load)
    longv = long_video(models, fastest_fp32(e2e), work, args.long, args.threads) if args.long else None
    res = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "command": "dfserve bench " + " ".join(shlex.quote(a) for a in sys.argv[2:]), "machine": info,
           "load_average_samples": load, "rounds": rounds,
           "weights": "seeded random (seed 0), UNTRAINED" if untrained else f"checkpoint {Path(checkpoint).name}",
           "end_to_end": e2e, "long_video": longv, "micro": mic,
           "drift": {p: {k: v for k, v in e.items() if not k.startswith("_")}
                     for p, e in meta.get("precisions", {}).items()},
           "drift_crops": meta.get("precision_validation", {}).get("crops"),
           "wall_s": round(time.perf_counter() - t_start, 1)}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "cpu_runtimes.json").write_text(json.dumps(res, indent=1) + "\n")
    (out_dir / "cpu_runtimes.md").write_text(markdown(res))
    plot(res, out_dir / "cpu_runtimes.png")
    print(markdown(res), file=sys.stderr)
    print(f"wrote {out_dir}/cpu_runtimes.{{json,md,png}}", file=sys.stderr)
    return 0
