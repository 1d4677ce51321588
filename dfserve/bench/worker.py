"""One benchmark configuration, run in a fresh process so its peak RSS is its own.

    python -m dfserve.bench.worker CONFIG.json RESULT.json

CONFIG: {"kind": "seed" | "embedded" | "triton", "videos": [...], "checkpoint": ..., "models": ...,
         "sample": "first:20", "frames": 20, "server": "127.0.0.1:8001", "options": {...},
         "runtime": "auto", "precision": "fp32", "warmup": false, "profile": false}
RESULT: {"videos": [{"path", "seconds", "frames", "p_fake", "label", "error", ["profile"]}], "wall_s", "peak_rss_mb"}

"warmup" scores the first 32 frames of the first video once before timing (kernels, shapes, caches);
"profile" adds to each video the seconds spent inside each stage (STAGES: decode, detector input, detect, crop,
classifier input, classify; summed over the threads running it) and the process's CPU seconds.
"""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path


def _peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM: reset at exec, unlike ru_maxrss which Linux carries over)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _peak_gpu_mb():
    """Peak GPU memory allocated by torch in this process, where a GPU was used."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def run_seed(cfg) -> list:
    from ..export.checkpoint import load_seed_model
    from ..export.reference import SeedReference
    from .seed_pipeline import SeedPipeline

    import torch

    torch.set_num_threads(cfg.get("threads") or torch.get_num_threads())
    model = load_seed_model(cfg["checkpoint"])
    if cfg.get("device", "cpu") != "cpu":  # the seed on the same GPU: eager fp32
        model = model.to(cfg["device"])
    pipe = SeedPipeline(SeedReference(model))
    out = []
    for v in cfg["videos"]:
        r = pipe.run(v, cfg["frames"], cfg.get("head", "mean"))
        out.append({"path": v, "seconds": r.seconds, "frames": r.frames, "frames_decoded": r.frames,
                    "p_fake": r.verdict.p_fake if r.verdict else None,
                    "label": r.verdict.label if r.verdict else None, "error": r.error,
                    "faces_found": r.faces_found, "decode_s": r.decode_s, "detect_s": r.detect_s,
                    "model_s": r.model_s})
    return out


def run_dfserve(cfg) -> list:
    from ..pipeline.options import ScoreOptions
    from ..pipeline.sampling import parse_policy

    o = dict(cfg.get("options", {}))
    opts = ScoreOptions(sample=parse_policy(cfg["sample"]), head=cfg.get("head", "mean"), **o)
    if cfg["kind"] == "triton-video":
        from ..client import DeepfakeClient

        out = []
        with DeepfakeClient(cfg["server"], timeout=600) as c:
            for v in cfg["videos"]:
                t = time.perf_counter()
                row = c.score_video(v, sample=cfg["sample"], head=cfg.get("head", "mean"))
                out.append({"path": v, "seconds": time.perf_counter() - t, "frames": row["frames_scored"],
                            "frames_decoded": row["frames_decoded"], "p_fake": row["p_fake"], "label": row["label"],
                            "error": row["error"]})
        return out
    from ..scoring import ScorerConfig, make_scorer

    if cfg["kind"] == "triton":
        config = ScorerConfig(server=cfg["server"])
    else:  # embedded: "dfserve" (CPU runtime) or "gpu" (torch on CUDA)
        gpu = cfg["kind"] == "gpu"
        config = ScorerConfig(models=Path(cfg["models"]), device=cfg.get("device", "cuda") if gpu else "cpu",
                              runtime=cfg.get("runtime", "torch" if gpu else "auto"), threads=cfg.get("threads") or 0,
                              precision=cfg.get("precision", "fp32"))
    warm = None
    if cfg.get("warmup"):  # the measured scorer reuses the warmed runtime: one copy of the models, as in `dfserve score`
        warm = make_scorer(ScoreOptions(sample=parse_policy("first:32"), **o), config)
        list(warm.score(cfg["videos"][:1]))
    scorer = make_scorer(opts, config, share_with=warm)
    del warm
    prof = _profile(scorer) if cfg.get("profile") else None
    out = []
    # one video at a time for per-video latency; the throughput run below batches across videos
    for v in cfg["videos"]:
        t = time.perf_counter()
        if prof is not None:
            prof.update({k: 0.0 for k in prof})
            cpu0 = _cpu_s()
        row = next(iter(scorer.score([v])))
        out.append({"path": v, "seconds": time.perf_counter() - t, "frames": row["frames_scored"],
                    "frames_decoded": row["frames_decoded"], "p_fake": row["p_fake"], "label": row["label"],
                    "error": row["error"], "runtime": row.get("runtime"), "precision": row.get("precision")})
        if prof is not None:
            out[-1]["profile"] = {k: round(x, 3) for k, x in prof.items()}
            out[-1]["profile"]["process_cpu_s"] = round(_cpu_s() - cpu0, 3)
    if cfg.get("throughput", True) and len(cfg["videos"]) > 1:
        t = time.perf_counter()
        n = sum(r["frames_scored"] for r in scorer.score(cfg["videos"]))
        cfg["_throughput"] = {"seconds": time.perf_counter() - t, "frames": n, "videos": len(cfg["videos"])}
    return out


def _cpu_s() -> float:
    """CPU seconds this process used so far, every thread (user + system)."""
    r = resource.getrusage(resource.RUSAGE_SELF)  # every thread; finer than os.times()' clock ticks
    return r.ru_utime + r.ru_stime


# the scorer's stages, timed where they run: key -> (object attribute, what it covers)
STAGES = {
    "decode_s": "decode thread waiting for decoded BGR chunks (PyAV decode + colour conversion, split ranges)",
    "detector_input_s": "detector input: the full frame downscaled to the detection size (decode thread)",
    "detect_s": "inside the runtime's detect (locate thread)",
    "crop_s": "face crops cut and resized to 112x112 (locate thread)",
    "classifier_input_s": "crops stacked and normalised for the classifier (calling thread)",
    "classify_s": "inside the runtime's classify (calling thread)",
}


def _profile(scorer) -> dict:
    """Wrap the scorer's stages (and its runtime's classify/detect) to add up the wall seconds spent inside each,
    summed over the threads that run it (STAGES). The stages overlap: their sum exceeds the video's wall time."""
    prof = {k: 0.0 for k in STAGES}
    rt = scorer.rt

    def timed(fn, key):
        def f(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                prof[key] += time.perf_counter() - t0
        return f

    def timed_iter(fn, key):
        def f(*a, **k):
            it = iter(fn(*a, **k))
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    prof[key] += time.perf_counter() - t0
                    return
                prof[key] += time.perf_counter() - t0
                yield item
        return f

    rt.classify = timed(rt.classify, "classify_s")
    rt.detect = timed(rt.detect, "detect_s")
    scorer.iter_frames = timed_iter(scorer.iter_frames, "decode_s")
    scorer.detector_prep = timed(scorer.detector_prep, "detector_input_s")
    scorer.crop = timed(scorer.crop, "crop_s")
    to_logits = scorer.faces_to_logits

    def faces_to_logits(faces):  # its classify time is counted in classify_s: the rest is the input's
        t0, c0 = time.perf_counter(), prof["classify_s"]
        try:
            return to_logits(faces)
        finally:
            prof["classifier_input_s"] += time.perf_counter() - t0 - (prof["classify_s"] - c0)

    scorer.faces_to_logits = faces_to_logits
    return prof


def main(argv=None) -> int:
    argv = argv if argv is not None else sys.argv[1:]
    cfg = json.loads(open(argv[0]).read())
    t0 = time.perf_counter()
    videos = run_seed(cfg) if cfg["kind"] == "seed" else run_dfserve(cfg)
    res = {"videos": videos, "wall_s": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb(),
           "peak_gpu_mem_mb": _peak_gpu_mb(), "throughput": cfg.get("_throughput")}
    with open(argv[1], "w") as f:
        json.dump(res, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
