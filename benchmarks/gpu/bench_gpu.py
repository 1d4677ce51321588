"""GPU benchmark stages for `benchmarks/gpu/run.sh` (one script per GPU trip; see run.sh for the plan).

    python benchmarks/gpu/bench_gpu.py STAGE --work DIR --results DIR [--smoke]

Stages (each writes <results>/stage-<name>.json; `summary` merges them into gpu-results.json/.md):
  prepare    export the models from seeded weights (dfserve export --random-init --seed 0) and generate
             10-s 1080p clips, H.264 and HEVC, with a moving, zooming face
  decode     NVDEC frames/s (PyNvVideoCodec SimpleDecoder -> torch batch), 1 and several sessions,
             H.264 and HEVC; PyAV (CPU) for reference
  models     detector frames/s and classifier faces/s by batch: fp32, fp16, fp16 + CUDA graphs
  e2e        `dfserve score --device cuda --sample all` on the clips: frames/s (all clips at once) and
             per-video latency p50/p99 (one clip at a time); the CLI run itself, as a user runs it
  agreement  p_fake of the GPU path (fp16 and fp32) against the CPU path (onnxruntime) on the same frames
  seed       the seed reference pipeline (OpenCV, dlib HOG, eager fp32 seed model) on the same GPU and clips
  cudashm    tritonclient CUDA shared memory: create, fill from a torch CUDA tensor by DLPack, read back
  hotpath    issue 21's design: --streams 1/2/4, --split 1/2/4/8, --cpu-decoders 0/auto, PyAV BGR vs planes,
             torch.compile vs eager + graphs, fp32 on pre-cropped faces vs onnxruntime, NV12 -> BGR vs the CPU
             path (benchmarks/gpu/hotpath_stage.py)
  triton     Triton serving the gpu flavor on the GPU: start-up, agreement with the CPU path, CUDA shared
             memory, whole videos at concurrency 1/4/16/64, perf_analyzer, ratio to the embedded rate
             (benchmarks/gpu/triton_stage.py; writes triton_gpu.png beside the JSON)
  summary    merge the stages, check the issue's targets, say what bounds a missed one

`--smoke` runs the same code on tiny clips and the CPU (to check the script without a GPU).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

TARGETS = {"e2e_frames_per_s": 3000, "classifier_fp16_faces_per_s": 50000, "clip_10s_1080p_p50_ms": 150}


# ------------------------------------------------------------------------------------------ helpers
def device(args) -> str:
    return "cpu" if args.smoke else "cuda"


def sync(dev: str) -> None:
    if dev.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def pct(values, q: float):
    from dfserve.bench.run import percentile

    return percentile(values, q)


def write_stage(args, name: str, data: dict) -> Path:
    p = Path(args.results) / f"stage-{name}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    data = {"stage": name, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **data}
    p.write_text(json.dumps(data, indent=2, default=str))
    print(f"[{name}] wrote {p}", file=sys.stderr)
    return p


def clips(args) -> dict:
    return json.loads((Path(args.work) / "clips.json").read_text())


def models_dir(args) -> Path:
    return Path(args.work) / "models"


def seed_model():
    from dfserve.export.checkpoint import random_seed_model

    return random_seed_model(0)


# ------------------------------------------------------------------------------------------- stages
def stage_prepare(args) -> dict:
    from dfserve import samples

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    if not (models_dir(args) / "metadata.json").is_file():
        subprocess.run([sys.executable, "-m", "dfserve.cli", "export", "--random-init", "--seed", "0",
                        "--out", str(models_dir(args))], check=True)
    export_s = time.perf_counter() - t
    n, w, h = (30, 320, 180) if args.smoke else (300, 1920, 1080)  # 10 s at 30 fps, 1080p
    per_codec = 1 if args.smoke else args.clips
    out = {"h264": [], "hevc": []}
    t = time.perf_counter()
    for codec in out:
        for k in range(per_codec):
            p = work / "clips" / f"{codec} clip {k}.mp4"  # a space in the path, as users have
            p.parent.mkdir(parents=True, exist_ok=True)
            if not p.is_file():
                # a key frame every 2 s, closed GOPs, B-frames: what phone cameras and most uploads carry,
                # and what --split needs to find ranges (x264's default 250-frame GOP gives a 10-s clip 2)
                samples.make_face_video(p, n_frames=n, width=w, height=h, fps=30, codec=codec, seed=k,
                                        codec_options=samples.keyframe_options(codec, 60, open_gop=False))
            out[codec].append(str(p))
    (work / "clips.json").write_text(json.dumps(out, indent=1))
    if not args.smoke:  # the summary may be made elsewhere: the machine is recorded where it was measured
        from dfserve.bench.run import machine_info

        Path(args.results).mkdir(parents=True, exist_ok=True)
        (Path(args.results) / "machine.json").write_text(json.dumps(machine_info(), indent=1))
    return {"models": str(models_dir(args)), "export_s": round(export_s, 1), "clips": out,
            "clip": {"frames": n, "width": w, "height": h, "fps": 30}, "generate_s": round(time.perf_counter() - t, 1)}


def _nvdec_decode(path: str, batch: int = 32, to_torch: bool = True) -> int:
    import PyNvVideoCodec as nvc
    import torch

    dec = nvc.SimpleDecoder(path, gpu_id=0, use_device_memory=True, output_color_type=nvc.OutputColorType.RGB)
    n = 0
    while True:
        frames = dec.get_batch_frames(batch)
        if not frames:
            break
        if to_torch:
            torch.stack([torch.from_dlpack(f) for f in frames])
        n += len(frames)
    torch.cuda.synchronize()
    return n


def _pyav_decode(path: str) -> int:
    import av

    n = 0
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for f in c.decode(s):
            f.to_ndarray(format="bgr24")
            n += 1
    return n


def _concurrent(fn, paths) -> dict:
    res = [0] * len(paths)
    errs = []

    def work(k):
        try:
            res[k] = fn(paths[k])
        except Exception as exc:  # noqa: BLE001
            errs.append(f"{type(exc).__name__}: {exc}")

    th = [threading.Thread(target=work, args=(k,)) for k in range(len(paths))]
    t = time.perf_counter()
    for x in th:
        x.start()
    for x in th:
        x.join()
    dt = time.perf_counter() - t
    return {"sessions": len(paths), "frames": sum(res), "seconds": round(dt, 3),
            "frames_per_s": round(sum(res) / dt, 1) if dt else None, "errors": errs}


def stage_decode(args) -> dict:
    from dfserve.pipeline.gpu_scorer import nvdec_status

    c = clips(args)
    out: dict = {"pyav_cpu": {}, "nvdec": {}}
    for codec, paths in c.items():
        out["pyav_cpu"][codec] = _concurrent(_pyav_decode, paths[:1])
    ok, why = nvdec_status()
    out["nvdec_status"] = why
    if not ok:
        return out
    for codec, paths in c.items():
        _nvdec_decode(paths[0])  # warm-up: driver, decoder creation
        r = {"decode_only_1": _concurrent(lambda p: _nvdec_decode(p, to_torch=False), paths[:1])}
        for s in (1, 2, 4, 8):
            r[f"to_torch_{s}"] = _concurrent(_nvdec_decode, [paths[k % len(paths)] for k in range(s)])
        out["nvdec"][codec] = r
    return out


def _time(fn, dev: str, iters: int) -> float:
    fn()
    sync(dev)
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(dev)
    return (time.perf_counter() - t) / iters


def stage_models(args) -> dict:
    import torch

    from dfserve.pipeline.runtimes.torch_rt import TorchRuntime

    dev = device(args)
    model = seed_model()
    batches = (8, 32) if args.smoke else (8, 16, 32, 64, 128, 256)
    iters = 2 if args.smoke else 20
    cfgs = {"fp32": dict(fp16=False, cuda_graph_batches=()), "fp16": dict(fp16=True, cuda_graph_batches=()),
            "fp16_cuda_graphs": dict(fp16=True, cuda_graph_batches=tuple(b for b in batches if b <= 256))}
    if dev == "cpu":
        cfgs = {"fp32": dict(fp16=False, cuda_graph_batches=())}
    out: dict = {"classifier_faces_per_s": {}, "detector_frames_per_s": {}}
    for name, kw in cfgs.items():
        t = time.perf_counter()
        rt = TorchRuntime(model, device=dev, **kw)
        setup_s = time.perf_counter() - t
        cls = {"setup_s": round(setup_s, 1)}
        for b in batches:
            x = torch.randn(b, 3, 112, 112, device=dev)
            cls[str(b)] = round(b / _time(lambda: rt.classify_tensor(x), dev, iters), 1)
        out["classifier_faces_per_s"][name] = cls
        if name != "fp16_cuda_graphs":
            det = {}
            for b in (batches[:3] if not args.smoke else (4,)):
                img = torch.randint(0, 255, (b, 3, 360, 640), device=dev).float()
                det[str(b)] = round(b / _time(lambda: rt.detect_tensor(img), dev, max(2, iters // 2)), 1)
            out["detector_frames_per_s"][name] = det
        del rt
        if dev != "cpu":
            torch.cuda.empty_cache()
    return out


def _scorer(dev: str, fp16: bool, workers: int, sample: str = "all"):
    from dfserve.pipeline.gpu_scorer import TorchScorer
    from dfserve.pipeline.options import ScoreOptions
    from dfserve.pipeline.sampling import parse_policy
    from dfserve.pipeline.runtimes.torch_rt import TorchRuntime

    rt = TorchRuntime(seed_model(), device=dev, fp16=fp16)
    opts = ScoreOptions(sample=parse_policy(sample), decode_workers=workers, batch=64 if dev != "cpu" else 16)
    return TorchScorer(rt, opts), rt


def stage_e2e(args) -> dict:
    dev = device(args)
    c = clips(args)
    paths = c["h264"] + c["hevc"]
    out: dict = {"clips": len(paths)}
    scorer, _ = _scorer(dev, fp16=dev != "cpu", workers=4)
    out["decoder"] = scorer.decoder

    def throughput(sc) -> dict:
        list(sc.score(paths[:1]))  # warm-up (cuDNN autotuning for the detector's shape, CUDA graphs)
        t = time.perf_counter()
        rows = list(sc.score(paths))
        dt = time.perf_counter() - t
        frames = sum(r["frames_decoded"] for r in rows)
        return {"decoder": sc.decoder, "decode_workers": 4, "frames": frames, "seconds": round(dt, 3),
                "frames_per_s": round(frames / dt, 1), "errors": [r["error"] for r in rows if r["error"]],
                "frames_with_face": sum(r["frames_with_face"] for r in rows)}

    try:
        out["throughput"] = throughput(scorer)
    except Exception as exc:  # noqa: BLE001 - NVDEC failing must not lose the other figures
        out["throughput"] = {"decoder": scorer.decoder, "error": f"{type(exc).__name__}: {exc}",
                             "traceback": traceback.format_exc()[-3000:]}
        from dfserve.pipeline.gpu_scorer import TorchScorer

        scorer = TorchScorer(scorer.rt, scorer.opt, use_nvdec=False)
        out["decoder"] = scorer.decoder
    if dev != "cpu" and scorer.decoder == "nvdec":  # the same scorer fed by PyAV (CPU decode, one upload per chunk), side by side
        try:
            from dfserve.pipeline.gpu_scorer import TorchScorer

            out["throughput_pyav_decode"] = throughput(TorchScorer(scorer.rt, scorer.opt, use_nvdec=False))
        except Exception as exc:  # noqa: BLE001
            out["throughput_pyav_decode"] = {"error": f"{type(exc).__name__}: {exc}"}
    lat = []
    reps = 1 if args.smoke else 3
    for _ in range(reps):
        for p in paths:
            t = time.perf_counter()
            list(scorer.score([p]))
            lat.append(time.perf_counter() - t)
    out["latency_per_video_ms"] = {"n": len(lat), "p50": round(1000 * pct(lat, 50), 1),
                                   "p99": round(1000 * pct(lat, 99), 1), "mean": round(1000 * statistics.mean(lat), 1)}
    # as a user runs it: one CLI process (model load + CUDA-graph capture included)
    cmd = [sys.executable, "-m", "dfserve.cli", "score", *paths, "--models", str(models_dir(args)), "--device", dev,
           "--sample", "all", "--no-progress", "--no-summary", "--decode-workers", "4"]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=540)
    dt = time.perf_counter() - t
    cli_rows = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    cframes = sum(x.get("frames_decoded") or 0 for x in cli_rows)
    out["cli"] = {"command": " ".join(cmd[1:]), "returncode": r.returncode, "wall_s": round(dt, 2), "frames": cframes,
                  "frames_per_s_incl_startup": round(cframes / dt, 1) if dt else None,
                  "stderr_tail": r.stderr[-1500:], "rows": cli_rows}
    return out


def stage_agreement(args) -> dict:
    from dfserve.pipeline.engine import Scorer
    from dfserve.pipeline.options import ScoreOptions
    from dfserve.pipeline.runtimes.ort import OnnxRuntime
    from dfserve.pipeline.sampling import parse_policy

    dev = device(args)
    c = clips(args)
    paths = c["h264"][:2] + c["hevc"][:1]
    sample = "every:5"
    cpu = {r["path"]: r for r in Scorer(OnnxRuntime(models_dir(args)),
                                         ScoreOptions(sample=parse_policy(sample))).score(paths)}
    out: dict = {"sample": sample, "videos": {}, "note": "seeded random UNTRAINED weights: p_fake is chaotic in "
                 "the input, so +-1 grey level of resize rounding moves it; the issue's 1e-2 bar needs trained weights"}
    for name, fp16 in (("fp16", True), ("fp32", False)) if dev != "cpu" else (("fp32", False),):
        scorer, _ = _scorer(dev, fp16=fp16, workers=2, sample=sample)
        for r in scorer.score(paths):
            w = cpu[r["path"]]
            d = out["videos"].setdefault(Path(r["path"]).name, {"cpu_p_fake": w["p_fake"]})
            d[f"{name}_p_fake"] = r["p_fake"]
            d[f"{name}_abs_diff"] = (abs(r["p_fake"] - w["p_fake"]) if r["p_fake"] is not None
                                     and w["p_fake"] is not None else None)
            d[f"{name}_frames_scored"] = (r["frames_scored"], w["frames_scored"])
    for name in ("fp16", "fp32"):
        diffs = [v.get(f"{name}_abs_diff") for v in out["videos"].values() if v.get(f"{name}_abs_diff") is not None]
        if diffs:
            out[f"max_abs_diff_{name}"] = max(diffs)
    return out


def stage_seed(args) -> dict:
    from dfserve.bench.seed_pipeline import SeedPipeline
    from dfserve.export.reference import SeedReference

    dev = device(args)
    c = clips(args)
    paths = c["h264"][:2]
    n = 10
    pipe = SeedPipeline(SeedReference(seed_model().to(dev)))
    res = []
    for p in paths:
        r = pipe.run(p, n)
        res.append({"path": Path(p).name, "frames": r.frames, "faces_found": r.faces_found, "seconds": round(r.seconds, 3),
                    "decode_s": round(r.decode_s, 3), "detect_s": round(r.detect_s, 3), "model_s": round(r.model_s, 3),
                    "p_fake": r.verdict.p_fake if r.verdict else None, "error": r.error})
    frames = sum(r["frames"] for r in res)
    secs = sum(r["seconds"] for r in res)
    return {"device": dev, "first_n_frames": n, "videos": res, "frames_per_s": round(frames / secs, 2) if secs else None}


def stage_cudashm(args) -> dict:
    try:
        import numpy as np
        import torch
        import tritonclient.utils.cuda_shared_memory as cshm
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    if not torch.cuda.is_available():
        return {"ok": False, "error": "no CUDA device"}
    x = torch.randint(0, 255, (4, 360, 640, 3), dtype=torch.uint8, device="cuda")
    nbytes = x.numel()
    h = cshm.create_shared_memory_region("dfserve-gpu-bench", nbytes, 0)
    try:
        raw = cshm.get_raw_handle(h)
        cshm.set_shared_memory_region_from_dlpack(h, [x])
        back = cshm.get_contents_as_numpy(h, np.uint8, list(x.shape))
        ok = bool(np.array_equal(back, x.cpu().numpy()))
    finally:
        cshm.destroy_shared_memory_region(h)
    return {"ok": ok, "raw_handle_type": type(raw).__name__, "raw_handle_len": len(raw), "bytes": nbytes}


def stage_hotpath(args) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    import hotpath_stage

    return hotpath_stage.stage_hotpath(args, clips(args), models_dir(args), seed_model())


def stage_triton(args) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    import triton_stage

    dev = device(args)
    emb = (lambda: _scorer(dev, fp16=True, workers=4)[0]) if dev != "cpu" else None
    out = triton_stage.stage_triton(args, clips(args), models_dir(args), emb)
    out["machine"] = platform.node()
    if triton_stage.plot(out, Path(args.results) / "triton_gpu.png"):
        out["plot"] = "triton_gpu.png"
    return out


def stage_summary(args) -> dict:
    res = Path(args.results)
    stages = {}
    for p in sorted(res.glob("stage-*.json")):
        stages[p.stem[len("stage-"):]] = json.loads(p.read_text())
    from dfserve.bench.run import machine_info

    info = json.loads((res / "machine.json").read_text()) if (res / "machine.json").is_file() else machine_info()
    s: dict = {"machine": info, "stages": stages, "targets": TARGETS, "checks": {}}
    e2e = stages.get("e2e", {})
    fps = e2e.get("throughput", {}).get("frames_per_s")
    p50 = e2e.get("latency_per_video_ms", {}).get("p50")
    cls = stages.get("models", {}).get("classifier_faces_per_s", {})
    best16 = max([v for k, d in cls.items() if k.startswith("fp16") for b, v in d.items() if b.isdigit()] or [0])
    s["checks"]["e2e_frames_per_s"] = fps
    s["checks"]["classifier_fp16_faces_per_s"] = best16 or None
    s["checks"]["clip_10s_1080p_p50_ms"] = p50
    dec = stages.get("decode", {}).get("nvdec", {})
    best_dec = max([r.get("frames_per_s") or 0 for c in dec.values() for r in c.values()] or [0])
    det = stages.get("models", {}).get("detector_frames_per_s", {})
    best_det = max([v for d in det.values() for b, v in d.items() if b.isdigit()] or [0])
    bounds = {"nvdec_decode_frames_per_s": best_dec or None, "detector_frames_per_s": best_det or None,
              "classifier_faces_per_s": best16 or None}
    s["bounds"] = bounds
    known = {k: v for k, v in bounds.items() if v}
    s["bound_by"] = min(known, key=known.get) if known else None
    tri = stages.get("triton", {})
    if tri.get("triton_gpu_e2e_frames_per_s"):
        s["checks"]["triton_gpu_e2e_frames_per_s"] = tri["triton_gpu_e2e_frames_per_s"]
        s["checks"]["triton_ratio_to_embedded"] = tri.get("ratio_to_embedded")
    agree = stages.get("agreement", {})
    if "max_abs_diff_fp32" in agree:
        s["checks"]["fp32_max_abs_diff_video"] = agree["max_abs_diff_fp32"]
    hot = stages.get("hotpath", {})
    for k in ("e2e_frames_per_s", "clip_10s_1080p_p50_ms", "classifier_fp16_faces_per_s"):
        if hot.get(k) is not None:  # the issue-21 design's figures replace the older stages'
            s["checks"][k] = hot[k]
    if "fp32_max_abs_diff_precropped" in hot:
        s["checks"]["fp32_max_abs_diff_precropped"] = hot["fp32_max_abs_diff_precropped"]
    seed = stages.get("seed", {}).get("frames_per_s")
    if seed and fps:
        s["speedup_vs_seed_frames_per_s"] = round(fps / seed, 1)
    s["analysis"] = analysis(stages)
    (res / "gpu-results.json").write_text(json.dumps(s, indent=2, default=str))
    (res / "gpu-results.md").write_text(markdown(s))
    return {"wrote": [str(res / "gpu-results.json"), str(res / "gpu-results.md")]}


def analysis(stages: dict) -> list:
    """What bounds the end-to-end figures, from the stages' own numbers."""
    out = []
    dec = stages.get("decode", {}).get("nvdec", {})
    e2e = stages.get("e2e", {})
    clip = stages.get("prepare", {}).get("clip", {})
    one = {c: d.get("to_torch_1", {}).get("frames_per_s") for c, d in dec.items()}
    p50 = e2e.get("latency_per_video_ms", {}).get("p50")
    if one and p50 and clip.get("frames"):
        floor = {c: round(1000 * clip["frames"] / v) for c, v in one.items() if v}
        out.append(f"per-video latency: one video is one NVDEC session; decoding its {clip['frames']} frames alone "
                   f"takes {floor} ms (H.264/HEVC, {one} frames/s per session), against a measured p50 of {p50} ms: "
                   "the latency target needs one video split over several sessions (key-frame ranges)")
    th = e2e.get("throughput", {})
    if th.get("frames_per_s") and dec:
        n = th.get("decode_workers")
        k = f"to_torch_{n}"
        agg = {c: d.get(k, {}).get("frames_per_s") for c, d in dec.items()}
        out.append(f"throughput: {th['frames_per_s']} frames/s end to end with {n} decode sessions, whose "
                   f"decoding alone gives {agg} frames/s; the rest of the gap is the single scoring thread "
                   "(detector, host NMS, crop, classifier in turn, overlap=False for CUDA-graph capture)")
    return out


def markdown(s: dict) -> str:
    m = s["machine"]
    L = [f"# GPU results: {m.get('gpu') or 'no GPU'}", "",
         f"- machine: {m.get('cpu')} x{m.get('cores')}, {m.get('platform')}",
         f"- versions: {json.dumps(m.get('versions'))}",
         "- weights: seeded random UNTRAINED (dfserve export --random-init --seed 0): speed figures are real, "
         "verdicts are not", ""]
    L += ["| check | measured | target |", "|---|---|---|"]
    for k, t in s["targets"].items():
        L.append(f"| {k} | {s['checks'].get(k)} | {t} |")
    L += ["", f"- bounds (best of each stage): {json.dumps(s.get('bounds'))}; slowest: {s.get('bound_by')}",
          f"- speed-up over the seed pipeline (frames/s): {s.get('speedup_vs_seed_frames_per_s')}", ""]
    L += [f"- {a}" for a in s.get("analysis", [])] + [""]
    for name, d in s["stages"].items():
        d = {k: v for k, v in d.items() if k not in ("rows",)}
        if name == "e2e" and "cli" in d:
            d["cli"] = {k: v for k, v in d["cli"].items() if k != "rows"}
        L += [f"## {name}", "", "```json", json.dumps(d, indent=1, default=str)[:6000], "```", ""]
    return "\n".join(L)


STAGES = {"prepare": stage_prepare, "decode": stage_decode, "models": stage_models, "e2e": stage_e2e,
          "agreement": stage_agreement, "seed": stage_seed, "cudashm": stage_cudashm, "triton": stage_triton,
          "hotpath": stage_hotpath,
          "summary": stage_summary}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stages", nargs="+", choices=sorted(STAGES))
    p.add_argument("--work", default=".cache/gpu-bench", help="models and clips (kept between steps)")
    p.add_argument("--results", required=True, help="results folder (benchmarks/results/<device>)")
    p.add_argument("--clips", type=int, default=4, help="10-s 1080p clips per codec")
    p.add_argument("--smoke", action="store_true", help="tiny clips on the CPU: check this script without a GPU")
    args = p.parse_args(argv)
    failed = []
    for name in args.stages:
        t = time.perf_counter()
        print(f"[{name}] start ({platform.node()})", file=sys.stderr, flush=True)
        try:
            data = STAGES[name](args)
            data["stage_seconds"] = round(time.perf_counter() - t, 1)
        except Exception as exc:  # noqa: BLE001 - one failing stage must not lose the others' figures
            failed.append(name)
            data = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:],
                    "stage_seconds": round(time.perf_counter() - t, 1)}
            print(data["traceback"], file=sys.stderr)
        if name != "summary":
            write_stage(args, name, data)
        print(f"[{name}] done in {data['stage_seconds']} s", file=sys.stderr, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
