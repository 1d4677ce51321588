"""CPU runtimes x precisions, side by side in one run (issue 11).

    python benchmarks/cpu_runtimes.py [--full] [--rounds 3] [--out benchmarks/results]

On the same generated 10-s 30-fps face videos (720p H.264; --full adds 1080p) and the same weights
(seeded random, UNTRAINED: speed and drift only), measures:

1. classifier faces/s per runtime x precision at batch 8 and 32 (real face crops), and detector
   frames/s at the engine's 720p detection size (640x360) at batch 8 and 16;
2. end to end `--sample all` frames/s for the seed pipeline (first 20 frames, its own setting),
   dfserve fp32 onnxruntime (the previous default), fp32 OpenVINO (the fastest fp32), bf16 and int8,
   each configuration in its own process (peak RSS per configuration), rounds interleaved, medians
   reported; with the time spent in the classifier and the detector (the profile);
3. beside speed, the drift each precision's export recorded in metadata.json, and |dp_fake| of the
   video verdict against the fp32 onnxruntime one.

Writes cpu_runtimes.json, cpu_runtimes.md and cpu_runtimes.png to <out>/<machine>/.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

E2E = [  # name, runtime, precision
    ("dfserve fp32 onnxruntime (previous default)", "onnxruntime", "fp32"),
    ("dfserve fp32 openvino (auto)", "openvino", "fp32"),
    ("dfserve bf16 openvino", "openvino", "bf16"),
    ("dfserve int8 openvino", "openvino", "int8"),
    ("dfserve int8 onnxruntime", "onnxruntime", "int8"),
]
MICRO_CLS = [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "bf16"),
             ("openvino", "int8")]
MICRO_DET = [("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")]


# --------------------------------------------------------------------------------- worker (own process)
def worker(cfg_path: str, out_path: str) -> int:
    from dfserve.bench.worker import _peak_rss_mb
    from dfserve.pipeline.options import ScoreOptions
    from dfserve.pipeline.sampling import parse_policy
    from dfserve.scoring import ScorerConfig, make_scorer

    cfg = json.loads(Path(cfg_path).read_text())
    if cfg["kind"] == "seed":
        from dfserve.bench.worker import run_seed

        res = run_seed({"checkpoint": cfg["checkpoint"], "videos": [cfg["video"]], "frames": cfg["frames"]})[0]
        res["peak_rss_mb"] = _peak_rss_mb()
        Path(out_path).write_text(json.dumps(res))
        return 0
    conf = ScorerConfig(models=Path(cfg["models"]), runtime=cfg["runtime"], precision=cfg["precision"])
    t = time.perf_counter()
    warm = make_scorer(ScoreOptions(sample=parse_policy("first:32")), conf)
    list(warm.score([cfg["video"]]))  # warm-up: kernels, shapes, caches
    sc = make_scorer(ScoreOptions(sample=parse_policy("all")), conf)
    setup_s = time.perf_counter() - t
    prof = {"classify_s": 0.0, "detect_s": 0.0}

    def timed(fn, key):
        def f(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                prof[key] += time.perf_counter() - t0
        return f

    sc.rt.classify = timed(sc.rt.classify, "classify_s")
    sc.rt.detect = timed(sc.rt.detect, "detect_s")
    t = time.perf_counter()
    row = next(iter(sc.score([cfg["video"]])))
    wall = time.perf_counter() - t
    res = {"seconds": wall, "frames": row["frames_scored"], "frames_decoded": row["frames_decoded"],
           "p_fake": row["p_fake"], "runtime": row.get("runtime"), "precision": row.get("precision"),
           "error": row["error"], "setup_s": setup_s, "profile": {k: round(v, 3) for k, v in prof.items()},
           "peak_rss_mb": _peak_rss_mb()}
    res["profile"]["other_main_thread_s"] = round(wall - prof["classify_s"] - prof["detect_s"], 3)
    Path(out_path).write_text(json.dumps(res))
    return 0


def run_worker(cfg: dict, timeout: float = 1200) -> dict:
    with tempfile.TemporaryDirectory() as td:
        cp, rp = Path(td) / "cfg.json", Path(td) / "res.json"
        cp.write_text(json.dumps(cfg))
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(cp), str(rp)],
                           capture_output=True, text=True, timeout=timeout, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"{cfg}: worker failed:\n{r.stderr[-3000:]}")
        return json.loads(rp.read_text())


# ------------------------------------------------------------------------------------- micro benchmarks
def _rate(fn, x, n_items, reps):
    fn(x)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn(x)
        ts.append(time.perf_counter() - t)
    return n_items / statistics.median(ts)


def micro(models: Path, rounds: int, reps: int = 3) -> dict:
    from dfserve.pipeline.faces import detector_input
    from dfserve.models import load_runtime, resolve_models
    from dfserve.samples import astronaut_bgr, astronaut_face_crops, normalize_faces

    faces = normalize_faces(astronaut_face_crops(32, seed=5))
    img = astronaut_bgr()
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[100:612, 400:912] = img
    det_x, _ = detector_input([frame] * 16, 640)
    rts = {}
    for rt, p in sorted(set(MICRO_CLS) | set(MICRO_DET)):
        rts[(rt, p)] = load_runtime(rt, resolve_models(models=Path(models)), batch=32, precision=p)
    cls = {f"{rt} {p}": {8: [], 32: []} for rt, p in MICRO_CLS}
    det = {f"{rt} {p}": {8: [], 16: []} for rt, p in MICRO_DET}
    for r in range(rounds):  # interleaved: every configuration sees the same load
        for rt, p in MICRO_CLS:
            for b in (8, 32):
                cls[f"{rt} {p}"][b].append(_rate(rts[(rt, p)].classify, faces[:b], b, reps))
        for rt, p in MICRO_DET:
            for b in (8, 16):
                det[f"{rt} {p}"][b].append(_rate(rts[(rt, p)].detect, det_x[:b], b, reps))
        print(f"  micro round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    def med(d):
        return {k: {str(b): round(statistics.median(v), 1) for b, v in bs.items()} for k, bs in d.items()}

    return {"classifier_faces_per_s": med(cls), "detector_frames_per_s_640x360": med(det),
            "raw": {"classifier": {k: {str(b): v for b, v in bs.items()} for k, bs in cls.items()},
                    "detector": {k: {str(b): v for b, v in bs.items()} for k, bs in det.items()}}}


# ------------------------------------------------------------------------------------------- report
def markdown(res: dict) -> str:
    m = res["machine"]
    L = [f"# CPU runtimes x precisions ({res['date']})", "",
         f"Machine: {m['cpu']}, {m['cores']} cores, no GPU. **The 2 cores were shared with other jobs running "
         "at the same time** (load average during the run in the JSON): absolute figures are noisy; ratios "
         "come from configurations measured in the same run, interleaved, medians of "
         f"{res['rounds']} rounds. Weights: seeded random, UNTRAINED (speed and drift only). Command: "
         f"`{res['command']}`.", ""]
    L += ["Columns `classifier s` / `detector s`: time inside the runtime's classify / detect calls; `other s`: the "
          "rest of the wall time on the scoring thread (PIL resizing of full frames to the detector size, face "
          "cropping and resizing, waiting for decode): the same for every runtime, it bounds the fastest "
          "configurations (issue 11 item 3 moves that work into the decode threads). Seed: its own setting (first "
          "20 frames, dlib HOG at full resolution, eager fp32); its `other s` is decode.", ""]
    for vid, e2e in res["end_to_end"].items():
        base = e2e.get("dfserve fp32 onnxruntime (previous default)", {}).get("frames_per_s")
        seed = e2e.get("seed pipeline (first 20 frames)", {}).get("frames_per_s")
        L += [f"## End to end, `--sample all`, {vid}", "",
              "| pipeline | frames/s | x seed | x previous default | classifier s | detector s | other s | "
              "peak RSS MB | verdict \\|dp_fake\\| vs fp32 ort |", "|---|---|---|---|---|---|---|---|---|"]
        for name, r in e2e.items():
            fps = r["frames_per_s"]
            pr = r.get("profile", {})
            L.append(f"| {name} | {fps:.1f} | " + (f"{fps / seed:.1f}x" if seed else "") + " | "
                     + (f"{fps / base:.2f}x" if base and "seed" not in name else "") + " | "
                     + " | ".join(str(pr.get(k, "")) for k in ("classify_s", "detect_s", "other_main_thread_s"))
                     + f" | {r['peak_rss_mb']:.0f} | " + (f"{r['dp_fake_vs_fp32']:.1e}" if r.get("dp_fake_vs_fp32")
                                                          is not None else "") + " |")
        L.append("")
    mc = res["micro"]
    L += ["## Classifier faces/s (ResNeXt50 + folded LSTM, 112x112, real face crops)", "",
          "| runtime precision | batch 8 | batch 32 | x ort fp32 (b8) |",
          "|---|---|---|---|"]
    b0 = mc["classifier_faces_per_s"]["onnxruntime fp32"]["8"]
    for k, v in mc["classifier_faces_per_s"].items():
        L.append(f"| {k} | {v['8']} | {v['32']} | {v['8'] / b0:.2f}x |")
    L += ["", "## Detector frames/s (RetinaFace-MobileNet0.25 at 640x360, the 720p detection size)", "",
          "| runtime precision | batch 8 | batch 16 | x ort fp32 (b8) |", "|---|---|---|---|"]
    d0 = mc["detector_frames_per_s_640x360"]["onnxruntime fp32"]["8"]
    for k, v in mc["detector_frames_per_s_640x360"].items():
        L.append(f"| {k} | {v['8']} | {v['16']} | {v['8'] / d0:.2f}x |")
    L += ["", "## Drift against fp32 (from the export's metadata.json)", "",
          f"Validation crops: {res['drift_crops']}. Seeded random weights are chaotic (labels of frames near "
          "p=0.5 flip under tiny changes), so the features' cosine similarity is the steadier measure.", "",
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
        return None
    vids = list(res["end_to_end"])
    fig, axes = plt.subplots(1, len(vids), figsize=(7 * len(vids), 4), squeeze=False)
    for ax, vid in zip(axes[0], vids):
        e2e = res["end_to_end"][vid]
        names = list(e2e)
        ax.barh(names, [e2e[n]["frames_per_s"] for n in names], color="tab:blue")
        ax.set_xlabel("frames/s (--sample all)")
        ax.set_title(f"{vid}, 2 shared cores")
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--full", action="store_true", help="also the 1080p video")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians reported)")
    ap.add_argument("--workdir", default=str(ROOT / ".cache" / "cpu_runtimes"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--no-seed", action="store_true", help="skip the seed pipeline")
    ap.add_argument("--report-only", metavar="JSON", help="rewrite the Markdown (and plot) of a results JSON")
    args = ap.parse_args(argv)
    if args.worker:
        return worker(*args.worker)
    if args.report_only:
        res = json.loads(Path(args.report_only).read_text())
        Path(args.report_only).with_suffix(".md").write_text(markdown(res))
        plot(res, Path(args.report_only).with_suffix(".png"))
        return 0

    from dfserve import samples
    from dfserve.bench.run import ensure_models, machine_info, machine_slug
    from dfserve.export.precision import export_precisions

    t_start = time.perf_counter()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    checkpoint, models, _untrained = ensure_models(work, None)
    models = Path(models)
    meta = json.loads((models / "metadata.json").read_text())
    if set(meta.get("precisions", {})) != {"fp32", "bf16", "int8"}:
        print("writing the precision variants (fp32, bf16, int8)...", file=sys.stderr, flush=True)
        export_precisions(models, ["fp32", "bf16", "int8"], force=True)
        meta = json.loads((models / "metadata.json").read_text())
    plan = [("720p", 1280, 720)] + ([("1080p", 1920, 1080)] if args.full else [])
    videos = {}
    for name, w, h in plan:
        p = work / f"{name}_h264_10s.mp4"
        if not p.is_file():
            samples.make_face_video(p, n_frames=300, width=w, height=h, fps=30, codec="h264")
        videos[f"{name} H.264 10 s (300 frames)"] = str(p)
    load = [os.getloadavg()[0]]
    print("micro benchmarks...", file=sys.stderr, flush=True)
    mic = micro(models, args.rounds)
    load.append(os.getloadavg()[0])
    e2e = {}
    for vid, path in videos.items():
        runs = {name: [] for name, _, _ in E2E}
        seed = None
        for r in range(args.rounds):
            for name, rt, p in E2E:
                runs[name].append(run_worker({"kind": "dfserve", "models": str(models), "runtime": rt,
                                              "precision": p, "video": path}))
                print(f"  {vid} round {r + 1}: {name}: {runs[name][-1]['frames'] / runs[name][-1]['seconds']:.1f} "
                      "frames/s", file=sys.stderr, flush=True)
            load.append(os.getloadavg()[0])
        if not args.no_seed:
            seed = run_worker({"kind": "seed", "checkpoint": checkpoint, "video": path, "frames": 20})
        out = {}
        if seed:
            out["seed pipeline (first 20 frames)"] = {"frames_per_s": seed["frames"] / seed["seconds"],
                                                     "peak_rss_mb": seed["peak_rss_mb"],
                                                     "profile": {"classify_s": round(seed["model_s"], 3),
                                                                 "detect_s": round(seed["detect_s"], 3),
                                                                 "other_main_thread_s": round(seed["decode_s"], 3)}}
        ref_p = statistics.median(r["p_fake"] for r in runs[E2E[0][0]])
        for name, rs in runs.items():
            k = sorted(range(len(rs)), key=lambda i: rs[i]["frames"] / rs[i]["seconds"])[len(rs) // 2]  # median run
            rr = rs[k]
            out[name] = {"frames_per_s": rr["frames"] / rr["seconds"], "frames": rr["frames"],
                         "seconds": rr["seconds"], "all_frames_per_s": [x["frames"] / x["seconds"] for x in rs],
                         "profile": rr["profile"], "peak_rss_mb": rr["peak_rss_mb"], "runtime": rr["runtime"],
                         "precision": rr["precision"], "p_fake": rr["p_fake"],
                         "dp_fake_vs_fp32": abs(rr["p_fake"] - ref_p) if rr["p_fake"] is not None else None}
        e2e[vid] = out
    info = machine_info()
    from importlib import metadata as _md

    for dist in ("openvino", "nncf"):
        try:
            info["versions"][dist] = _md.version(dist)
        except _md.PackageNotFoundError:
            info["versions"][dist] = None
    res = {"date": _dt.date.today().isoformat(), "command": "python benchmarks/cpu_runtimes.py "
           + " ".join(a for a in (argv if argv is not None else sys.argv[1:])), "machine": info,
           "shared_machine": True, "load_average_samples": [round(x, 2) for x in load], "rounds": args.rounds,
           "weights": "seeded random (seed 0), UNTRAINED", "end_to_end": e2e, "micro": mic,
           "drift": {p: {k: v for k, v in e.items() if k != "_model"} for p, e in meta["precisions"].items()},
           "drift_crops": meta.get("precision_validation", {}).get("crops"),
           "wall_s": round(time.perf_counter() - t_start, 1)}
    out_dir = Path(args.out) / machine_slug(info)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "cpu_runtimes.json").write_text(json.dumps(res, indent=1) + "\n")
    (out_dir / "cpu_runtimes.md").write_text(markdown(res))
    plot(res, out_dir / "cpu_runtimes.png")
    print(markdown(res))
    print(f"wrote {out_dir}/cpu_runtimes.{{json,md,png}}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
