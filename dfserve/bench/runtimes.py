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
4. every stage alone on one thread (decode, detector input, detector, crop + resize, classifier input,
   classifier: `stage_costs`), the CPU ms a frame costs in each mode, and from them the frames/s the cores
   allow with perfect overlap (`bounds`): the stage that bounds each mode; the seed's per-frame costs, from
   its first 20 frames, extrapolated to the whole clip (and said so); every frames/s also in u, the
   onnxruntime fp32 classifier faces/s at batch 8 of the same run;
5. with --long SECONDS: the 10-s 720p clip looped (remuxed) into a SECONDS-long video, scored by the default
   CPU path (fp32) with --long-sample (default all), for its frames/s and peak RSS (memory must stay flat in
   video length);
6. with the seed pipeline: the engine's boxes and verdict against the seed's on the clip's first 20 frames,
   per box convention (before / after the box mapping, `--detector dlib`; `run.box_fidelity`), as `dfserve
   bench` without --runtimes reports them.

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

from .run import box_fidelity, ensure_models, fidelity_markdown, machine_info, machine_slug, run_config

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
    from unittest import mock

    from ..pipeline.runtimes.ort import MODEL_THREADS_ENV

    # each network alone here: every core for each (the engine's split, model_threads, is for the two at once)
    with mock.patch.dict(os.environ, {MODEL_THREADS_ENV: "all"}):
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

    return {"classifier_faces_per_s": med(cls), "detector_frames_per_s_640x360": med(det), "threads": "all"}


def micro_label(mic: dict) -> str:
    """What the micro figures' threads were: every core (from 2026-12-05 on), or before that OpenVINO's split
    per network (model_threads: on 2 cores one thread for the cheaper network) in the run of that day."""
    return "every core" if mic.get("threads") == "all" else "the engine's threads per network (model_threads)"


# ------------------------------------------------------------------------------------- stage costs
STAGE_NAMES = ("decode", "detector_input", "detector", "crop_resize", "classifier_input", "classifier")


def _cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)  # every thread; finer than os.times()' clock ticks
    return r.ru_utime + r.ru_stime


def _cost(fn, n_items: int, reps: int) -> dict:
    """ms per item of fn(): wall and CPU (every thread of this process), medians of `reps` after one warm-up."""
    fn()
    walls, cpus = [], []
    for _ in range(reps):
        c, t = _cpu_s(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(_cpu_s() - c)
    return {"wall_ms": round(1000 * statistics.median(walls) / n_items, 3),
            "cpu_ms": round(1000 * statistics.median(cpus) / n_items, 3)}


def stage_costs(models: Path, video: str, pairs: List[Tuple[str, str]], n_frames: int = 64, reps: int = 3) -> dict:
    """Each stage of the engine alone, per frame of `video` (one face per frame, as --faces largest), on ONE
    thread (the networks compiled with 1 thread; decode with FFmpeg's own threads, counted in CPU time):
    the CPU work a frame costs, whatever the overlap. The engine's functions, on the video's real frames:
    decode = decode.iter_frames (PyAV + BGR conversion, the whole clip); detector_input = faces.detector_input
    (uint8, chunks of spec.DEFAULT_CHUNK); detector = the runtime's detect on those chunks (float32 conversion
    included); crop_resize = faces.crop_faces with the fp32 detector's boxes; classifier_input =
    faces.classifier_input; classifier = the runtime's classify at the engine's batch."""
    from .. import spec
    from ..models import load_runtime, resolve_models
    from ..pipeline.decode import DecodeStats, iter_frames, probe
    from ..pipeline.faces import classifier_input, crop_faces, detector_input, faces_per_frame
    from ..pipeline.options import ScoreOptions
    from ..pipeline.sampling import parse_policy

    opts = ScoreOptions().validate()
    chunk = spec.DEFAULT_CHUNK
    info = probe(video)

    def decode_all() -> int:
        return sum(len(f) for _, f in iter_frames(video, parse_policy("all"), probe(video), DecodeStats(), chunk))

    n_all = decode_all()
    out = {"video": Path(video).name, "frames": n_frames, "size": f"{info.width}x{info.height}",
           "batch": opts.batch, "chunk": chunk, "threads": 1, "shared": {}, "per_mode": {}}
    out["shared"]["decode"] = _cost(decode_all, n_all, max(1, reps - 1))
    frames = []
    for _, f in iter_frames(video, parse_policy(f"first:{n_frames}"), probe(video), DecodeStats(), chunk):
        frames += f
    chunks = [frames[k:k + chunk] for k in range(0, len(frames), chunk)]
    out["shared"]["detector_input"] = _cost(lambda: [detector_input(c, opts.detect_max_side, np.uint8)
                                                     for c in chunks], len(frames), reps)
    det_x = [detector_input(c, opts.detect_max_side, np.uint8) for c in chunks]
    resolved = resolve_models(models=models)
    env = os.environ.pop("DFSERVE_MODEL_THREADS", None)
    try:
        rts = {pr: load_runtime(pr[0], resolved, threads=1, batch=opts.batch, precision=pr[1]) for pr in pairs}
    finally:
        if env is not None:
            os.environ["DFSERVE_MODEL_THREADS"] = env
    boxes = []
    for (x, scale), c in zip(det_x, chunks):
        loc, scores, lm = rts[BASELINE].detect(x.astype(np.float32))
        for dets in faces_per_frame(loc, scores, x.shape[2], x.shape[3], scale, opts.detect_threshold, "largest",
                                    opts.min_face, opts.box, lm):
            boxes.append(dets[0].box if dets else None)
    out["faces_found"] = sum(b is not None for b in boxes)
    out["shared"]["crop_resize"] = _cost(lambda: crop_faces(frames, boxes, opts.margin), len(frames), reps)
    crops = crop_faces(frames, boxes, opts.margin)
    out["shared"]["classifier_input"] = _cost(lambda: classifier_input(crops), len(crops), reps)
    faces = classifier_input(crops)
    batches = [faces[k:k + opts.batch] for k in range(0, len(faces), opts.batch)]
    for (rt, p), r in rts.items():
        out["per_mode"][f"{rt} {p}"] = {
            "detector": _cost(lambda: [r.detect(x.astype(np.float32)) for x, _ in det_x], len(frames), reps),
            "classifier": _cost(lambda: [r.classify(b) for b in batches], len(faces), reps)}
        print(f"  stage costs: {rt} {p} done", file=sys.stderr, flush=True)
    return out


def bounds(stages: dict, e2e_rows: dict, mic: dict, u: float, cores: int) -> dict:
    """Per mode: the CPU ms a frame costs (stage_costs, 1 thread), the frames/s the cores allow if every stage
    overlapped perfectly (cores x 1000 / sum), the classifier's own cap (its faces/s alone on every core), the
    measured frames/s, and the stage that costs the most."""
    sh = {k: v["cpu_ms"] for k, v in stages["shared"].items()}
    out = {}
    for name, r in e2e_rows.items():
        if "runtime" not in r:
            continue
        key = f"{r['runtime']} {r['precision']}"
        pm = stages["per_mode"].get(key)
        if pm is None:
            continue
        ms = {"decode": sh["decode"], "detector_input": sh["detector_input"], "detector": pm["detector"]["cpu_ms"],
              "crop_resize": sh["crop_resize"], "classifier_input": sh["classifier_input"],
              "classifier": pm["classifier"]["cpu_ms"]}
        total = sum(ms.values())
        cls_alone = mic["classifier_faces_per_s"].get(key, {})
        det_alone = mic["detector_frames_per_s_640x360"].get(key, {})
        prof, fps = r.get("profile", {}), r["frames_per_s"]
        busy = prof.get("process_cpu_s", 0) / r["seconds"] if r.get("seconds") else None
        out[key] = {"cpu_ms_per_frame": {k: round(v, 2) for k, v in ms.items()}, "cpu_ms_total": round(total, 2),
                    "bound_frames_per_s": round(cores * 1000 / total, 1),
                    "bound_u": round(cores * 1000 / total / u, 3),
                    "classifier_alone_faces_per_s": max(cls_alone.values()) if cls_alone else None,
                    "detector_alone_frames_per_s": max(det_alone.values()) if det_alone else None,
                    "bounding_stage": max(ms, key=ms.get),
                    "bounding_stage_share": round(max(ms.values()) / total, 3),
                    "measured_frames_per_s": round(fps, 4), "measured_u": round(fps / u, 3),
                    "measured_over_bound": round(fps * total / (cores * 1000), 3),
                    "process_cores_busy": round(busy, 2) if busy is not None else None}
    return out


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
            n = v["frames"]
            per = {"decode": 1000 * v["decode_s"] / n, "dlib_hog": 1000 * v["detect_s"] / n,
                   "model": 1000 * v["model_s"] / n}
            rest = 1000 * v["seconds"] / n - sum(per.values())
            per["crop_resize_other"] = max(0.0, rest)
            rows[f"seed pipeline (first {SEED_FRAMES} frames)"] = {
                "frames_per_s": n / v["seconds"], "peak_rss_mb": s["peak_rss_mb"], "frames": n, "path": path,
                "p_fake": v.get("p_fake"),
                "seconds": v["seconds"],
                "profile": {"classify_s": round(v["model_s"], 3), "detect_s": round(v["detect_s"], 3),
                            "decode_s": round(v["decode_s"], 3)},
                # the seed runs one frame after the other on one thread (its model: one [1, N] clip), so its
                # cost per frame is the sum; the whole clip is extrapolated from these N frames, not measured
                "per_frame_ms": {k: round(x, 2) for k, x in per.items()},
                "extrapolated_frames_per_s": round(1000 / sum(per.values()), 3),
                "extrapolated": f"whole clip = per-frame cost measured on its first {n} frames x every frame"}
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


def long_video(models: str, clip: str, work: Path, seconds: int, sample: str, threads: int) -> dict:
    """The 10-s clip looped into a `seconds`-long video (remuxed, no re-encode: samples.loop_video), scored by
    the default CPU path (`--runtime auto`, fp32) with `--sample SAMPLE` in its own process: frames/s, peak RSS."""
    from .. import samples

    times = max(1, round(seconds / 10))
    path = work / f"long_720p_h264_{times * 10}s_looped.mp4"
    if not path.is_file():
        print(f"  looping {Path(clip).name} x{times} into {path}...", file=sys.stderr, flush=True)
        samples.loop_video(clip, path, times)
    res = run_config({"name": "long", "kind": "embedded", "videos": [str(path)], "models": models,
                      "runtime": "auto", "precision": "fp32", "sample": sample, "threads": threads or None,
                      "profile": True, "warmup": True, "throughput": False}, timeout=7200)
    v = res["videos"][0]
    if v["error"]:
        raise RuntimeError(f"long video: {v['error']}")
    return {"video": path.name, "made_by": f"samples.loop_video({Path(clip).name}, x{times}): remuxed",
            "seconds_of_video": times * 10, "sample": sample, "runtime": v.get("runtime"),
            "precision": v.get("precision"), "frames_decoded": v["frames_decoded"], "frames": v["frames"],
            "frames_per_s": round(v["frames"] / v["seconds"], 2),
            "decoded_frames_per_s": round(v["frames_decoded"] / v["seconds"], 2),
            "wall_s": round(v["seconds"], 1), "peak_rss_mb": round(res["peak_rss_mb"], 1),
            "load_average_after": round(os.getloadavg()[0], 2), "profile": v["profile"]}


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
    u = res.get("u_faces_per_s")
    if u:
        L += [f"**u** = {u} faces/s: {res['u']}. Every frames/s below is also given in u.", ""]
    for vid, e2e in res["end_to_end"].items():
        base = e2e.get(label(*BASELINE), {}).get("frames_per_s")
        seed = next((r["frames_per_s"] for k, r in e2e.items() if k.startswith("seed")), None)
        L += [f"## End to end, `--sample all`, {vid}", "",
              "Stage columns: wall seconds inside each stage, summed over the threads running it (they overlap); "
              "`CPU s`: the process's CPU seconds (2 cores busy = 2 x wall).", "",
              "| pipeline | frames/s | in u | x seed | x previous default | decode s | det. input s | detector s | "
              "crop s | cls. input s | classifier s | CPU s (cores busy) | peak RSS MB | "
              "verdict \\|dp_fake\\| vs fp32 onnxruntime |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in e2e.items():
            fps, pr = r["frames_per_s"], r.get("profile", {})
            dp = r.get("dp_fake_vs_fp32")
            busy = (f"{pr['process_cpu_s']:.1f} ({pr['process_cpu_s'] / r['seconds']:.2f})"
                    if "process_cpu_s" in pr and r.get("seconds") else "")
            cells = [pr.get(k, "") for k in ("decode_s", "detector_input_s", "detect_s", "crop_s",
                                             "classifier_input_s", "classify_s")]
            L.append(f"| {name} | {fps:.1f} | " + (f"{fps / u:.3f}" if u else "") + " | "
                     + (f"{fps / seed:.1f}x" if seed else "") + " | "
                     + (f"{fps / base:.2f}x" if base and "seed" not in name else "") + " | "
                     + " | ".join(str(c) for c in cells) + f" | {busy} | {r['peak_rss_mb']:.0f} | "
                     + ("" if dp is None else f"{dp:.1e}") + " |")
        sd = next((r for k, r in e2e.items() if k.startswith("seed") and "per_frame_ms" in r), None)
        if sd:
            pf = sd["per_frame_ms"]
            L += ["", f"Seed: measured on its first {sd['frames']} frames only (dlib HOG at full resolution is slow); "
                      f"per frame {pf['decode']:.1f} ms decode + {pf['dlib_hog']:.1f} ms dlib HOG + {pf['model']:.1f} "
                      f"ms model + {pf['crop_resize_other']:.1f} ms crop/resize/other, so the whole clip "
                      f"**extrapolated** (not measured) at {sd['extrapolated_frames_per_s']:.2f} frames/s"
                      + (f" = {sd['extrapolated_frames_per_s'] / u:.4f} u" if u else "") + "."]
        L.append("")
    st, bd = res.get("stage_costs"), res.get("bounds")
    if st and bd:
        sh = st["shared"]
        L += [f"## What bounds each mode: every stage alone, ms per frame on 1 thread ({st['video']}, "
              f"{st['frames']} frames, {st['faces_found']} with a face)", "",
              "CPU ms per frame (every thread of the process; wall in the JSON). With perfect overlap and nothing "
              f"else running, {res['machine']['cores']} cores allow at most {res['machine']['cores']} x 1000 / "
              "(sum) frames/s: the `bound`.", "",
              "| mode | decode | det. input | detector | crop+resize | cls. input | classifier | sum | bound frames/s "
              f"(in u) | classifier alone, {micro_label(res['micro'])} | measured (in u) | measured / bound | cores busy | "
              "largest stage |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for key, b in bd.items():
            c = b["cpu_ms_per_frame"]
            L.append(f"| {key} | {c['decode']:.1f} | {c['detector_input']:.1f} | {c['detector']:.1f} | "
                     f"{c['crop_resize']:.1f} | {c['classifier_input']:.1f} | {c['classifier']:.1f} | "
                     f"{b['cpu_ms_total']:.1f} | {b['bound_frames_per_s']:.1f} ({b['bound_u']:.2f}) | "
                     f"{b['classifier_alone_faces_per_s']} faces/s | {b['measured_frames_per_s']:.1f} "
                     f"({b['measured_u']:.3f}) | {b['measured_over_bound']:.2f} | {b['process_cores_busy']} | "
                     f"{b['bounding_stage']} ({b['bounding_stage_share']:.0%}) |")
        L += ["", "Shared stages (wall / CPU ms per frame): " + ", ".join(
            f"{k} {v['wall_ms']:.2f} / {v['cpu_ms']:.2f}" for k, v in sh.items()) + ".", ""]
    if res.get("long_video"):
        lv = res["long_video"]
        L += [f"## Long video: {lv['seconds_of_video']} s of 720p H.264 ({lv['made_by']}), `--sample {lv['sample']}`, "
              f"default CPU path ({lv['runtime']} {lv['precision']})", "",
              f"{lv['frames_decoded']} frames decoded, {lv['frames']} scored in {lv['wall_s']} s "
              f"({lv['decoded_frames_per_s']} decoded and {lv['frames_per_s']} scored frames/s), peak RSS "
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
    L += fidelity_markdown(res.get("fidelity"))
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
    first = next(iter(videos.values()))
    print("stage costs (each stage alone, 1 thread)...", file=sys.stderr, flush=True)
    stages = stage_costs(Path(models), first, pairs)
    load.append(round(os.getloadavg()[0], 2))
    u = mic["classifier_faces_per_s"][" ".join(BASELINE)]["8"]
    bnd = bounds(stages, e2e[next(iter(videos))], mic, u, info["cores"])
    longv = long_video(models, first, work, args.long, args.long_sample, args.threads) if args.long else None
    # boxes and verdicts against the seed pipeline's (issue 29): its first frames of the clip, per box convention
    seed_row = next((r for k, r in e2e[next(iter(videos))].items() if k.startswith("seed")), None)
    fid = (box_fidelity(models, [first], {"per_video": [{"path": first, "p_fake": seed_row["p_fake"]}]},
                        SEED_FRAMES, args.threads) if seed_row and seed_row.get("p_fake") is not None else None)
    res = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "command": "dfserve bench " + " ".join(shlex.quote(a) for a in sys.argv[2:]), "machine": info,
           "load_average_samples": load, "rounds": rounds,
           "weights": "seeded random (seed 0), UNTRAINED" if untrained else f"checkpoint {Path(checkpoint).name}",
           "u_faces_per_s": u,
           "u": "onnxruntime fp32 classifier faces/s at batch 8, every thread (the `micro` of this run)",
           "end_to_end": e2e, "stage_costs": stages, "bounds": bnd, "long_video": longv, "fidelity": fid,
           "micro": mic,
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
