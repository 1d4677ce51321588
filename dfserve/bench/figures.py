"""The figures of README.md and docs/*.md, rendered from the results JSON under benchmarks/results/ (issue 26).

Never type a measured figure into a page: put the table between marker comments

    <!-- figures:NAME -->
    ...rendered...
    <!-- /figures:NAME -->

and run `make figures` (= `python -m dfserve.bench.figures`), which rewrites every such block from the results
that `dfserve bench`, `benchmarks/*.py` and `benchmarks/gpu/run.sh` wrote. `--check` rewrites nothing and exits 1
naming each block that differs (tests/test_figures.py runs it). Every table ends with its sources: the results
file, the machine, the date and the command that measured it.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
RESULTS = "benchmarks/results"
CPU = f"{RESULTS}/amd-epyc-2c-nogpu"
XEON = f"{RESULTS}/intel-r-xeon-r-processor-2c-nogpu"
# the latest one-run CPU bench with stage costs and bounds (issue 23: `dfserve bench --runtimes ... --quick --long
# 600`, whose cpu_runtimes.json is kept under this name beside the machine's full (720p + 1080p) cpu_runtimes.json)
CPU_BOUNDS = f"{CPU}/cpu_bounds.json"
H200 = f"{RESULTS}/intel-r-xeon-r-processor-16c-nvidia-h200"
BLOCK = re.compile(r"(<!-- figures:(?P<name>[a-z0-9_-]+) -->\n)(?P<body>.*?)(<!-- /figures:(?P=name) -->)", re.S)


class Ctx:
    """Reads results relative to the repository root; links are written relative to the page (`prefix`)."""

    def __init__(self, root: Path, prefix: str):
        self.root, self.prefix = Path(root), prefix
        self._cache: Dict[str, dict] = {}

    def load(self, rel: str) -> dict:
        if rel not in self._cache:
            self._cache[rel] = json.loads((self.root / rel).read_text())
        return self._cache[rel]

    def link(self, rel: str) -> str:
        return f"[`{rel.split('/')[-1]}`]({self.prefix}{rel})"


# ---------------------------------------------------------------------------------------------------- helpers
def machine_name(m: Optional[dict]) -> str:
    if not m:
        return "machine not recorded"
    gpu = m.get("gpu") or "no GPU"
    return f"{m.get('cpu') or 'CPU'}, {m.get('cores')} cores, {gpu}"


def day(text: Optional[str]) -> str:
    return str(text)[:10] if text else "date not recorded"


def table(header: List[str], rows: List[List[str]]) -> List[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def f0(x) -> str:
    return "" if x is None else f"{x:,.0f}"


def f1(x) -> str:
    return "" if x is None else f"{x:,.1f}"


def f2(x) -> str:
    return "" if x is None else f"{x:.2f}"


def e1(x) -> str:
    return "" if x is None else ("0" if x == 0 else f"{x:.1e}")


def small(x: float, digits: int) -> str:
    """`digits` decimals, or 6 where that would print a nonzero value as 0."""
    return f"{x:.{digits}f}" if x == 0 or abs(x) >= 10 ** -digits else f"{x:.6f}"


def source(ctx: Ctx, rel: str, machine: Optional[dict], date: Optional[str], command: Optional[str]) -> str:
    cmd = f", `{command}`" if command else ""
    return f"{ctx.link(rel)}: {machine_name(machine)}, {day(date)}{cmd}"


def sources(lines: List[str]) -> List[str]:
    return ["", "Sources: " + "; ".join(lines) + "."]


def h200_machine(ctx: Ctx) -> dict:
    return ctx.load(f"{H200}/machine.json")


# ---------------------------------------------------------------------------------------------------- tables
def summary(ctx: Ctx) -> List[str]:
    """The README's one table: CPU (2 cores) and H200, each row with its machine, date and source."""
    rel = CPU_BOUNDS  # the latest one-run CPU bench (issue 23)
    cr = ctx.load(rel)
    e = cr["end_to_end"]["720p H.264 10 s (300 frames)"]
    u = cr["u_faces_per_s"]
    sd = e["seed pipeline (first 20 frames)"]
    seed = sd["extrapolated_frames_per_s"]
    cpu_m, cpu_d = machine_name(cr["machine"]), day(cr["date"])
    cpu_src = ctx.link(rel)
    rows = [[cpu_m, "seed pipeline (OpenCV + dlib HOG + eager fp32)", f"10-s 720p H.264, its first {sd['frames']} "
             "frames measured, the whole clip extrapolated", f"{seed:.2f} frames/s ({seed / u:.3f} u)", cpu_d, cpu_src]]
    for key, what in (("dfserve fp32 onnxruntime (previous default)", "`dfserve score`, onnxruntime fp32"),
                      ("dfserve fp32 openvino", "`dfserve score`, OpenVINO fp32 (default: `--runtime auto`, exact)"),
                      ("dfserve int8 openvino", "`dfserve score --precision int8` (OpenVINO)")):
        fps = e[key]["frames_per_s"]
        rows.append([cpu_m, what, "10-s 720p H.264, `--sample all`",
                     f"{f1(fps)} frames/s ({fps / u:.2f} u, {fps / seed:.0f}x seed)", cpu_d, cpu_src])
    lv = cr["long_video"]
    rows.append([cpu_m, f"`dfserve score` (default CPU path, {lv['runtime']} {lv['precision']}), a "
                 f"{lv['seconds_of_video'] // 60}-minute video, `--sample {lv['sample']}`",
                 f"720p H.264, {lv['frames_decoded']:,} frames decoded",
                 f"{f1(lv['frames_per_s'])} frames/s scored, peak RSS {f0(lv['peak_rss_mb'])} MB", cpu_d, cpu_src])
    g = ctx.load(f"{H200}/gpu-results.json")
    st, hm = g["stages"], machine_name(h200_machine(ctx))
    e2e = st["e2e"]
    gsrc = ctx.link(f"{H200}/gpu-results.json")
    note = " (before the issue-21 GPU redesign)"
    rows.append([hm, "`dfserve score --device cuda` (NVDEC, fp16, CUDA graphs)" + note,
                 f"{e2e['throughput']['decode_workers']} 10-s 1080p clips at once, `--sample all`",
                 f"{f1(e2e['throughput']['frames_per_s'])} frames/s ({f0(g['speedup_vs_seed_frames_per_s'])}x the seed "
                 f"on this machine: {st['seed']['frames_per_s']} frames/s)", day(e2e["finished"]), gsrc])
    lat = e2e["latency_per_video_ms"]
    rows.append([hm, "one video, `--device cuda`" + note, "10-s 1080p clip", f"p50 {f0(lat['p50'])} ms, p99 {f0(lat['p99'])} ms",
                 day(e2e["finished"]), gsrc])
    mo = st["models"]["classifier_faces_per_s"]["fp16_cuda_graphs"]
    rows.append([hm, "classifier alone, fp16 + CUDA graphs" + note, "batch 256", f"{f0(mo['256'])} faces/s",
                 day(st["models"]["finished"]), gsrc])
    t = ctx.load(f"{H200}/stage-triton.json")
    best = max(t["whole_video"], key=lambda r: r["frames_per_s"])
    tsrc = ctx.link(f"{H200}/stage-triton.json")
    rows.append([hm, "Triton gpu flavor, `deepfake_video` over gRPC (`run.sh triton`)",
                 f"whole 1080p videos, concurrency {best['concurrency']}",
                 f"{f1(best['frames_per_s'])} frames/s ({t['ratio_to_embedded']:.2f}x embedded)", day(t["finished"]), tsrc])
    pf = max(t["perf_frames"]["rows"], key=lambda r: r["frames_per_s"])
    rows.append([hm, "Triton gpu flavor, perf_analyzer `deepfake_frames`",
                 f"640x360 frames, batch {pf['batch']}, concurrency {pf['concurrency']}",
                 f"{f0(pf['frames_per_s'])} frames/s, p50 {pf['p50_latency_ms']} ms", day(t["finished"]), tsrc])
    out = table(["machine", "what", "input", "measured", "date", "source"], rows)
    return out + ["", f"CPU rows: `{cr['command'].split(' --out')[0]}` ({cr['weights']} weights: speed only; u = "
                  f"{f1(u)} faces/s, the onnxruntime fp32 classifier at batch 8 in the same run; what bounds each mode: "
                  "docs/cpu-speed.md). "
                  "H200 rows: `benchmarks/gpu/run.sh step1` / `step2`, and `run.sh prep` + `run.sh triton` for Triton."]


def cpu_runtimes(ctx: Ctx) -> List[str]:
    rel = f"{CPU}/cpu_runtimes.json"
    cr = ctx.load(rel)
    e7, e10 = cr["end_to_end"]["720p H.264 10 s (300 frames)"], cr["end_to_end"]["1080p H.264 10 s (300 frames)"]
    base = "dfserve fp32 onnxruntime (previous default)"
    labels = {"seed pipeline (first 20 frames)": "seed pipeline (first 20 frames, its setting)",
              base: "fp32 onnxruntime (the previous default)", "dfserve fp32 openvino": "fp32 OpenVINO (`auto`)",
              "dfserve bf16 openvino": "bf16 OpenVINO", "dfserve int8 openvino": "int8 OpenVINO",
              "dfserve int8 onnxruntime": "int8 onnxruntime"}
    rows = []
    for key, label in labels.items():
        a, b = e7[key], e10[key]
        r7, r10 = a["frames_per_s"] / e7[base]["frames_per_s"], b["frames_per_s"] / e10[base]["frames_per_s"]
        dp = "" if "dp_fake_vs_fp32" not in a else ("0" if a["dp_fake_vs_fp32"] == 0 and b["dp_fake_vs_fp32"] == 0
                                                     else f"{e1(a['dp_fake_vs_fp32'])} / {e1(b['dp_fake_vs_fp32'])}")
        drift = ""
        prec, rt = a.get("precision"), a.get("runtime")
        if prec in cr["drift"] and rt in cr["drift"][prec]["drift"]:
            d = cr["drift"][prec]["drift"][rt]
            drift = (f"{e1(d['per_frame']['max_abs_dp_fake'])} / {e1(d['per_video']['mean@100']['max_abs_dp_fake'])} / "
                     f"{d['features_cosine']['min']:.3f}")
        elif key == base:
            drift = "exact (the reference)"
        rows.append([label, f1(a["frames_per_s"]), f"{r7:.2f}x", f1(b["frames_per_s"]), f"{r10:.2f}x",
                     f0(a["peak_rss_mb"]), dp, drift])
    out = table(["`--sample all`, 10-s H.264", "720p frames/s", "x previous", "1080p frames/s", "x previous",
                 "peak RSS MB (720p)", "verdict \\|dp_fake\\| vs fp32 (720p / 1080p)",
                 "classifier drift: frame max \\|dp\\| / video@100 max \\|dp\\| / feature cosine min"], rows)
    lv = cr["long_video"]
    out += ["", f"A {lv['seconds_of_video']}-s 720p H.264 video ({lv['frames']:,} frames) with {lv['precision']} "
                f"{lv['runtime']}: {f1(lv['frames_per_s'])} frames/s, peak RSS {f0(lv['peak_rss_mb'])} MB."]
    return out + sources([source(ctx, rel, cr["machine"], cr["date"], cr["command"].split(" --out")[0])
                          + f", medians of {cr['rounds']} rounds, {cr['weights']} weights"])


def cpu_bounds(ctx: Ctx) -> List[str]:
    """docs/cpu-speed.md: one `dfserve bench --runtimes` run: every mode's frames/s in u, its stages' CPU ms per
    frame, the bound they give, and what bounds it; the seed (extrapolated) and the long video."""
    rel = CPU_BOUNDS
    cr = ctx.load(rel)
    u, cores = cr["u_faces_per_s"], cr["machine"]["cores"]
    e = next(iter(cr["end_to_end"].values()))
    rows = []
    for key, b in cr["bounds"].items():
        c = b["cpu_ms_per_frame"]
        rows.append([key, f"**{f1(b['measured_frames_per_s'])}** ({b['measured_u']:.2f} u)",
                     *(f1(c[k]) for k in ("decode", "detector_input", "detector", "crop_resize", "classifier_input",
                                          "classifier")),
                     f1(b["cpu_ms_total"]), f"{f1(b['bound_frames_per_s'])} ({b['bound_u']:.2f} u)",
                     f"{b['measured_over_bound']:.2f}", f2(b["process_cores_busy"]),
                     f"{b['bounding_stage'].replace('_', ' ')} ({b['bounding_stage_share']:.0%})"])
    seed = next(r for k, r in e.items() if k.startswith("seed"))
    pf = seed["per_frame_ms"]
    rows.append([f"seed pipeline (first {seed['frames']} frames, **extrapolated**)",
                 f"{seed['extrapolated_frames_per_s']:.2f} ({seed['extrapolated_frames_per_s'] / u:.3f} u)",
                 f1(pf["decode"]), "", f"{f1(pf['dlib_hog'])} (dlib HOG)", f1(pf["crop_resize_other"]), "",
                 f1(pf["model"]), f1(sum(pf.values())), "one frame after the other", "", "", "dlib HOG"])
    out = table(["mode (10-s 720p, `--sample all`)", "frames/s (in u)", "decode", "det. input", "detector",
                 "crop+resize", "cls. input", "classifier", "sum (CPU ms/frame)", f"bound: {cores} x 1000 / sum",
                 "measured / bound", "cores busy", "largest stage"], rows)
    mc = cr["micro"]["classifier_faces_per_s"]
    threads = "every core" if cr["micro"].get("threads") == "all" else "the engine's threads per network"
    out += ["", f"u = {f1(u)} faces/s ({cr['u']}). Classifier alone ({threads}), faces/s at batch 8 / 32: "
            + ", ".join(f"{k} {f0(v['8'])} / {f0(v['32'])}" for k, v in mc.items()) + "."]
    lv = cr.get("long_video")
    if lv:
        out += ["", f"Long video ({lv['seconds_of_video'] // 60} minutes of 720p, {lv['frames_decoded']:,} frames, the "
                f"10-s clip looped by remuxing), default CPU path ({lv['runtime']} {lv['precision']}), `--sample "
                f"{lv['sample']}`: {lv['frames']:,} frames scored in {f1(lv['wall_s'])} s ({f1(lv['frames_per_s'])} "
                f"frames/s), **peak RSS {f0(lv['peak_rss_mb'])} MB**."]
    return out + sources([source(ctx, rel, cr["machine"], cr["date"], cr["command"].split(" --out")[0])
                          + f", medians of {cr['rounds']} rounds, load average samples {cr['load_average_samples']}, "
                          f"{cr['weights']} weights"])


def cpu_micro(ctx: Ctx) -> List[str]:
    rel = f"{CPU}/cpu_runtimes.json"
    cr = ctx.load(rel)
    m = cr["micro"]
    rows = []
    for name, c in m["classifier_faces_per_s"].items():
        rows.append([f"classifier (faces/s), {name}", f0(c.get("8")), f0(c.get("32")), ""])
    for name, c in m["detector_frames_per_s_640x360"].items():
        rows.append([f"detector 640x360 (frames/s), {name}", f0(c.get("8")), "", f0(c.get("16"))])
    return table(["network, runtime, precision", "batch 8", "batch 32", "batch 16"], rows) + sources(
        [source(ctx, rel, cr["machine"], cr["date"], cr["command"].split(" --out")[0]) + " (`micro`)"])


def make_bench(ctx: Ctx) -> List[str]:
    rel = f"{CPU}/results.json"
    r = ctx.load(rel)
    rows = []
    for run in r["runs"]:
        rows.append([run["name"], run["setting"], run["videos"], run["frames"], f2(run["frames_per_s"]),
                     f"{run['ratio_frames_per_s']:.2f}x" if run.get("ratio_frames_per_s") else "",
                     f"{run['latency_p50_s']:.2f}", f"{run['latency_p99_s']:.2f}", f0(run["peak_rss_mb"])])
    out = table(["config", "setting", "videos", "frames", "frames/s", "x seed", "p50 s", "p99 s", "peak RSS MB"], rows)
    pa = r.get("perf_analyzer_rows") or []
    if pa:
        out += ["", *table(["perf_analyzer `deepfake_frames`, 640x360", "concurrency", "frames/s", "p50 ms", "p99 ms"],
                          [[f"batch {p['batch']}", p["concurrency"], f2(p["frames_per_s"]), f1(p["p50_latency_ms"]),
                            f1(p["p99_latency_ms"])] for p in pa])]
    ag = r.get("agreement") or {}
    if ag:
        out += ["", *table(["verdict agreement with the seed (same weights, first N frames)", "videos", "labels",
                            "max \\|dp_fake\\|", "mean \\|dp_fake\\|"],
                           [[k, v["videos"], v["label_agreement"], v["max_abs_p_fake_diff"], v["mean_abs_p_fake_diff"]]
                            for k, v in ag.items()])]
    return out + sources([source(ctx, rel, r["machine"], r["date"], r["command"])
                          + (", seeded random UNTRAINED weights" if r.get("untrained") else "")])


def triton_soak(ctx: Ctx) -> List[str]:
    rel = f"{CPU}/triton_soak.json"
    s = ctx.load(rel)
    runs = dict(s["runs"]) if isinstance(s["runs"], list) else s["runs"]
    rows, srcs = [], []
    for key in ("before", "after"):
        c = s["comparison"][key]
        u = c["models_uss_mb"]
        rows.append([key, c["requests"], c["failures"], f"{c['p50_s']:.1f} / {c['p99_s']:.1f} s", f"{u['ready']:.0f} MB",
                     f"{u['peak']:.0f} MB", f"{u['after_clients_stopped']:.0f} MB",
                     f"+{c['models_uss_slope_after_warmup_mb_per_min']:.0f} MB/min"])
        run = runs.get(key, {})
        srcs.append(f"{key}: {day(run.get('date'))}, `{(run.get('command') or '').split(' --note')[0]}`")
    run0 = runs.get("after", {})
    out = table([f"{run0.get('clients', 8)} clients x {run0.get('duration_s', 180):.0f} s", "requests", "failures",
                 "p50 / p99", "ready", "peak", "after the clients stop", "after warm-up"], rows)
    return out + ["", f"Sources: {ctx.link(rel)} (`comparison`; the python model processes' USS), "
                      f"{machine_name(s.get('machine') if isinstance(s.get('machine'), dict) else None)}; "
                  + "; ".join(srcs) + "."]


def web_soak(ctx: Ctx) -> List[str]:
    rows, srcs = [], []
    for label, rel in (("before", f"{XEON}/web_soak_before.json"), ("after", f"{XEON}/web_soak.json"),
                       ("earlier, before issue 25", f"{CPU}/web_soak.json")):
        w = ctx.load(rel)
        lat, rss = w["job_latency_s"], w["server_rss_mb"]
        rows.append([f"{label} ({ctx.link(rel)})", w["requests"],
                     f"{w['jobs_submitted']} ({w['jobs_done']} + {w['jobs_failed_as_expected']})", w["failures"],
                     f2(w["jobs_per_s"]), f"{lat['p50']:.1f} / {lat['p99']:.1f} s", f"{rss['ready']:.0f} MB",
                     f"**{rss['peak']:.0f} MB**"])
        srcs.append(f"{label}: {machine_name(w['machine'])}, {day(w['date'])}, `{w['command'].split(' --note')[0]}`, "
                    f"load average {w['load_average_1m']['start']}-{w['load_average_1m']['end']}")
    out = table(["run", "requests", "jobs (done + no-face failed as expected)", "failures", "jobs/s",
                 "latency p50 / p99", "RSS ready", "**RSS peak**"], rows)
    return out + ["", "Sources: " + "; ".join(srcs) + "."]


def ray_scaling(ctx: Ctx) -> List[str]:
    rel = f"{CPU}/ray_scaling.json"
    r = ctx.load(rel)
    base = next(x for x in r["runs"] if x.get("actors") == 1)["frames_per_s"]
    v = r["videos"]
    rows = [[x["setting"], x["actors"] if x["actors"] else "-", f2(x["frames_per_s"]), f2(x["seconds"]),
             f"{x['frames_per_s'] / base:.2f}x"] for x in r["runs"]]
    out = table(["setting", "actors", "frames/s", f"wall s ({v['count']} x {v['seconds']:.0f}-s {v['size']} videos)",
                 "x 1 actor"], rows)
    return out + sources([source(ctx, rel, r["machine"], r["date"], "python -m dfserve.distributed.bench")
                          + f", Ray {r['ray']}, {r['weights']} weights; {r['note']}"])


def h200(ctx: Ctx) -> List[str]:
    rel = f"{H200}/gpu-results.json"
    g = ctx.load(rel)
    st, tg = g["stages"], g["targets"]
    e2e, mo, de = st["e2e"], st["models"], st["decode"]
    cl, dt = mo["classifier_faces_per_s"], mo["detector_frames_per_s"]
    nv = de["nvdec"]
    ses = lambda c: " / ".join(f0(nv[c][f"to_torch_{n}"]["frames_per_s"]) for n in (1, 4, 8))  # noqa: E731
    rows = [
        [f"`dfserve score --device cuda --sample all`, {e2e['throughput']['decode_workers']} videos at once (NVDEC)",
         f"{f0(e2e['throughput']['frames_per_s'])} frames/s (PyAV decode + upload: {f0(e2e['throughput_pyav_decode']['frames_per_s'])})",
         f0(tg["e2e_frames_per_s"])],
        ["one 10-s 1080p video, p50 / p99", f"{f0(e2e['latency_per_video_ms']['p50'])} / {f0(e2e['latency_per_video_ms']['p99'])} ms",
         f"{f0(tg['clip_10s_1080p_p50_ms'])} ms"],
        ["classifier fp16 + CUDA graphs, batch 256 / 64",
         f"{f0(cl['fp16_cuda_graphs']['256'])} / {f0(cl['fp16_cuda_graphs']['64'])} faces/s (fp32: {f0(cl['fp32']['256'])} / {f0(cl['fp32']['64'])})",
         f0(tg["classifier_fp16_faces_per_s"])],
        ["detector 640x360, batch 32", f"{f0(dt['fp32']['32'])} frames/s fp32, {f0(dt['fp16']['32'])} fp16", ""],
        ["NVDEC 1080p, 1 / 4 / 8 sessions", f"H.264 {ses('h264')}; HEVC {ses('hevc')} frames/s", ""],
        ["seed pipeline, same GPU (dlib HOG on the CPU)",
         f"{st['seed']['frames_per_s']} frames/s: dfserve is ~{f0(g['speedup_vs_seed_frames_per_s'])}x", ""],
        ["p_fake against the CPU path (onnxruntime), per video",
         f"fp16 max {st['agreement']['max_abs_diff_fp16']:.4f}, fp32 max {st['agreement']['max_abs_diff_fp32']:.4f}",
         "fp16 <= 1e-2"],
    ]
    out = table(["", "H200", "issue target"], rows)
    return out + sources([source(ctx, rel, h200_machine(ctx), e2e["finished"], "benchmarks/gpu/run.sh step1 / step2")
                          + f" (stages finished {day(st['decode']['finished'])}); bound by `{g['bound_by']}`"])


def h200_triton(ctx: Ctx) -> List[str]:
    rel = f"{H200}/stage-triton.json"
    t = ctx.load(rel)
    wv = t["whole_video"]
    pf = t["perf_frames"]["rows"]
    shm = t["cuda_shared_memory"]
    rows = [
        ["tritonserver start-up, every model ready", f"{t['startup_s']} s", ""],
        [f"`deepfake_video` p_fake vs the CPU path ({t['agreement']['reference'].split(', ', 1)[-1]}), {t['agreement']['sample']}",
         f"max {t['agreement']['max_abs_diff']:.4f} (fp16), same frames scored", ""],
        ["whole videos over gRPC, concurrency " + " / ".join(str(r["concurrency"]) for r in wv),
         " / ".join(f1(r["frames_per_s"]) for r in wv) + " frames/s", ""],
        [f"per video p50 at concurrency {wv[0]['concurrency']} / {wv[-1]['concurrency']}",
         f"{wv[0]['p50_ms'] / 1000:.2f} s / {wv[-1]['p50_ms'] / 1000:.1f} s", ""],
        [f"`deepfake_video` best / embedded ({f0(t['embedded']['frames_per_s'])} frames/s, same run)",
         f"{t['ratio_to_embedded']:.2f}", ">= 0.8: " + ("met" if t["ratio_to_embedded"] >= 0.8 else "missed")],
        ["perf_analyzer `deepfake_frames` 640x360 batch 8, concurrency " + " / ".join(str(r["concurrency"]) for r in pf),
         " / ".join(f0(r["frames_per_s"]) for r in pf) + " frames/s, p50 " + " / ".join(f"{r['p50_latency_ms']}" for r in pf)
         + " ms", ""],
        ["CUDA shared memory from the client",
         "ok" if not shm.get("cuda_shm_error") else "failed: tritonclient 2.51 needs the old `cuda.cudart` API", ""],
    ]
    out = table(["", "H200", "issue target"], rows)
    return out + sources([source(ctx, rel, h200_machine(ctx), t["finished"], "benchmarks/gpu/run.sh triton")
                          + f", flavor `{t['flavor']}`, {len(t['clips'])} clips, tritonserver from {t['tritonserver']['source']}"])


def box_mapping(ctx: Ctx) -> List[str]:
    rel = f"{RESULTS}/box_mapping.json"
    ms = ctx.load(rel)["models"]
    names = {"astronaut": "astronaut", "t1_group": "insightface group photo", "aligned_face": "insightface aligned face",
             "video_frames": "generated clip frames"}
    cols = ("raw retinaface", "box only (4 constants)", "landmarks, continuous", "landmarks + dlib grid (shipped)")
    shipped = ms[cols[-1]]

    def cell(v):
        return f"{v['mean']:.3f} / {v['min']:.3f}"

    rows = [[f"all ({shipped['held_out']['n']})"] + [cell(ms[c]["held_out"]) for c in cols] + [""]]
    for key, v in shipped["per_source_held_out"].items():
        lo = shipped.get("leave_one_source_out", {}).get(key)
        rows.append([f"{names.get(key, key)} ({v['n']})"] + [cell(ms[c]["per_source_held_out"][key]) for c in cols]
                    + [cell(lo) if lo else ""])
    return table(["held-out faces", "raw RetinaFace", "box only (before)", "landmarks, unsnapped",
                  "landmarks + dlib grid (shipped)", "shipped, source left out of the fit"], rows) + sources(
        [f"{ctx.link(rel)} (IoU with dlib's box, mean / min), written by `python benchmarks/fit_box_mapping.py`; "
         "machine and date not recorded in the file"])


def box_fidelity(ctx: Ctx) -> List[str]:
    rel = f"{RESULTS}/box_fidelity.json"
    f = ctx.load(rel)
    sharp = next(v for k, v in f.items() if k.startswith("sharpened"))
    mild = next(v for k, v in f.items() if k.startswith("seeded"))
    labels = {"retinaface boxes (before mapping)": "`--box retinaface` (before the mapping)",
              "seed boxes (after mapping, default)": "`--box seed` (after, default)", "--detector dlib": "`--detector dlib`"}
    rows = []
    for key, label in labels.items():
        s, m = sharp["modes"][key], mild["modes"][key]
        rows.append([label, f"{s['box_iou_mean']:.3f} / {s['box_iou_min']:.3f}",
                     f"{small(s['dp_fake_mean'], 3)} / {small(s['dp_fake_max'], 3)}",
                     f"{small(m['dp_fake_mean'], 4)} / {small(m['dp_fake_max'], 4)}"])
    return table(["crops", "box IoU with the seed's: mean / min", "abs dp_fake, sharpened weights: mean / max",
                  "mild random weights: mean / max"], rows) + sources(
        [f"{ctx.link(rel)}, written by `python benchmarks/box_fidelity.py` ({sharp['videos']} clips x "
         f"{sharp['frames_per_video']} frames); machine and date not recorded in the file"])


RENDERERS: Dict[str, Callable[[Ctx], List[str]]] = {
    "summary": summary, "cpu-runtimes": cpu_runtimes, "cpu-micro": cpu_micro, "cpu-bounds": cpu_bounds,
    "make-bench": make_bench,
    "triton-soak": triton_soak, "web-soak": web_soak, "ray-scaling": ray_scaling, "h200": h200,
    "h200-triton": h200_triton, "box-mapping": box_mapping, "box-fidelity": box_fidelity,
}


# ---------------------------------------------------------------------------------------------------- pages
def pages(root: Path) -> List[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def render_text(text: str, root: Path, prefix: str) -> str:
    ctx = Ctx(root, prefix)

    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in RENDERERS:
            raise KeyError(f"figures:{name}: no such renderer (known: {', '.join(RENDERERS)})")
        return m.group(1) + "\n".join(RENDERERS[name](ctx)) + "\n" + m.group(4)

    return BLOCK.sub(sub, text)


def render_page(page: Path, root: Path) -> str:
    prefix = "../" * len(page.resolve().parent.relative_to(root.resolve()).parts)
    return render_text(page.read_text(), root, prefix)


def blocks(text: str) -> List[str]:
    return [m.group("name") for m in BLOCK.finditer(text)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dfserve.bench.figures",
                                 description="render README.md's and docs/*.md's figure tables from benchmarks/results/")
    ap.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page's tables differ")
    args = ap.parse_args(argv)
    stale = []
    for page in pages(args.root):
        old = page.read_text()
        new = render_page(page, args.root)
        if new != old:
            stale.append(page)
            if not args.check:
                page.write_text(new)
        n = len(blocks(old))
        if n:
            print(f"{page.relative_to(args.root)}: {n} table(s) " + ("differ" if new != old and args.check else
                                                                   "rendered" if new != old else "up to date"))
    if args.check and stale:
        print("stale figures (run `make figures`): " + ", ".join(str(p.relative_to(args.root)) for p in stale),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
