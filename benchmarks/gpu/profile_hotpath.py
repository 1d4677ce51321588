"""Where a GPU chunk's time goes: each stage of the torch hot path on one chunk of 16 decoded 1080p frames
(synchronised, median of 5), torch.profiler's top CUDA and CPU ops over one clip, and NVDEC `--split`
against one session (frames equal, ranges used, decode-only time). Writes one JSON.

    python benchmarks/gpu/profile_hotpath.py --out DIR [--frames 150]

Needs CUDA and PyNvVideoCodec (run.sh installs it); seeded random weights, no export needed."""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from pathlib import Path


def _med(fn, reps=5):
    import torch

    fn()
    torch.cuda.synchronize()
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        t.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(t), 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--work", default=".cache/gpu-profile")
    a = ap.parse_args(argv)
    import torch

    from dfserve import samples
    from dfserve.export.checkpoint import random_seed_model
    from dfserve.pipeline.decode import DecodeStats, probe
    from dfserve.pipeline.gpu_scorer import TorchScorer
    from dfserve.pipeline.nvdec import iter_frames_nvdec, iter_frames_nvdec_split
    from dfserve.pipeline.options import ScoreOptions
    from dfserve.pipeline.runtimes.torch_rt import TorchRuntime
    from dfserve.pipeline.sampling import parse_policy

    out: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    clip = work / "clip 1080p.mp4"
    if not clip.is_file():
        samples.make_face_video(clip, n_frames=a.frames, width=1920, height=1080, fps=30, codec="h264", seed=0,
                                codec_options=samples.keyframe_options("h264", 30, open_gop=False))
    rt = TorchRuntime(random_seed_model(0), device="cuda", fp16=True, cuda_graph_batches=(8, 16, 32, 64))
    info = probe(str(clip))
    idx, batch = next(iter(iter_frames_nvdec(str(clip), parse_policy("all"), info, DecodeStats(), 16)))
    stages = {}
    stages["frames_to_detector"] = _med(lambda: rt.frames_to_detector(batch))
    x, scale = rt.frames_to_detector(batch)
    stages["detect_tensor"] = _med(lambda: rt.detect_tensor(x))
    stages["locate (all of detect)"] = _med(lambda: rt.locate(batch))
    dets = rt.locate(batch)
    boxes = [d[0].box if d else None for d in dets]
    stages["crop_resize"] = _med(lambda: rt.crop_resize(batch, boxes))
    faces = rt.crop_resize(batch, boxes)
    stages["classify_tensor"] = _med(lambda: rt.classify_tensor(faces))
    stages["faces_found"] = sum(1 for d in dets if d)
    out["chunk16_ms"] = stages
    print("chunk of 16 1080p frames, ms:", stages, flush=True)

    # the whole clip through the scorer, profiled
    sc = TorchScorer(rt, ScoreOptions(sample=parse_policy("all"), streams=1, split="1"))
    list(sc.score([str(clip)]))
    t0 = time.perf_counter()
    list(sc.score([str(clip)]))
    out["clip_ms_split1_streams1"] = round(1000 * (time.perf_counter() - t0), 1)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        list(sc.score([str(clip)]))
    ka = prof.key_averages()
    try:
        out["top_cuda"] = ka.table(sort_by="device_time_total", row_limit=15)
    except Exception:  # noqa: BLE001 - older torch names it cuda_time_total
        out["top_cuda"] = ka.table(sort_by="cuda_time_total", row_limit=15)
    out["top_cpu"] = ka.table(sort_by="self_cpu_time_total", row_limit=15)
    print(out["top_cuda"], flush=True)
    print(out["top_cpu"], flush=True)

    # NVDEC split against one session
    pol = parse_policy("all")
    ref = [(i, hashlib.md5(f.cpu().numpy().tobytes()).hexdigest())
           for ix, b in iter_frames_nvdec(str(clip), pol, probe(str(clip)), DecodeStats(), 16) for i, f in zip(ix, b)]
    split = {}
    for k in (1, 2, 4):
        st = DecodeStats()
        got = [(i, hashlib.md5(f.cpu().numpy().tobytes()).hexdigest())
               for ix, b in iter_frames_nvdec_split(str(clip), pol, probe(str(clip)), st, 16, split=str(k))
               for i, f in zip(ix, b)]
        ms = _med(lambda: [None for _ in iter_frames_nvdec_split(str(clip), pol, probe(str(clip)), DecodeStats(), 16,
                                                                 split=str(k))], reps=3)
        sc = TorchScorer(rt, ScoreOptions(sample=parse_policy("all"), split=str(k)))
        list(sc.score([str(clip)]))
        t0 = time.perf_counter()
        list(sc.score([str(clip)]))
        split[k] = {"ranges": st.ranges, "frames_equal_to_one_session": got == ref, "decode_only_ms": ms,
                    "clip_ms_streams_auto": round(1000 * (time.perf_counter() - t0), 1)}
        print(f"split {k}: {split[k]}", flush=True)
    out["nvdec_split"] = split
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "profile-hotpath.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
