#!/usr/bin/env python
"""Bounded soak of the real Triton server (`dfserve serve`): N gRPC clients on loopback for S seconds.

Starts `dfserve serve` on free 127.0.0.1 ports (a fresh cpu-flavor repository, models exported from seeded
random weights unless --models is given), runs --clients client threads for --duration seconds on generated
real encoded videos (dfserve.samples: several sizes, H.264 and HEVC, a precropped, a face-less and a corrupt
file), waits at most --drain seconds for requests in flight, closes the clients, measures once more after
--settle seconds of idleness and stops the server: it always stops by itself.

Each request scores one video, alternating (per client, at random) between the two client paths:
  video:  DeepfakeClient.score_video (encoded bytes -> deepfake_video, decoded on the server, BLS)
  frames: decoded here, frames through system shared memory -> deepfake_frames + video_aggregator
          (what `dfserve score --server` does); each client reconnects every --reconnect requests, so
          shared-memory regions are registered and released all along.
with a random sampling policy per request, so the models see many batch shapes.

Reports requests, failures (goal 0), p50/p99 latency, the private memory (USS, and RSS) of tritonserver and
of its python model processes (triton_python_backend_stub, one per model instance) when ready, at the end of
the warm-up, at peak, at the end of the load and after the clients stopped, the growth after warm-up, and
/dev/shm usage during and after. Writes one run (--label) into benchmarks/results/<machine>/triton_soak.json.

    python benchmarks/triton_soak.py                                   # 8 clients, 180 s, label "after"
    python benchmarks/triton_soak.py --without all --label before      # the same without the memory fixes
    python benchmarks/triton_soak.py --clients 4 --duration 30 --no-write

--without turns fixes off in the server's environment (for before/after measurements): `ort`
(DFSERVE_ORT_RELEASE=0: onnxruntime's memory patterns on, its arena never shrunk), `trim` (DFSERVE_MALLOC_TRIM=0:
no malloc_trim), `arena-max` (MALLOC_ARENA_MAX=8 x cores: glibc's own limit), or `all`.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIXES = ("ort", "trim", "arena-max")
SAMPLES = ("all", "every:2", "every:3", "first:16", "uniform:7", "fps:10")  # a random one per request
CHUNKS = (4, 8, 16, 32)  # frames per request to deepfake_frames (frames path): many batch shapes
MB = 2 ** 20


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs, q):
    from dfserve.bench.run import percentile

    return percentile(xs, q, ndigits=3)


# ------------------------------------------------------------------------------------------ inputs
def make_clips(folder: Path) -> list:
    """[(path, kind, expect)]: expect "face" (a verdict), "noface" (no verdict) or "error" (an error row)."""
    from dfserve import samples

    folder.mkdir(parents=True, exist_ok=True)
    s = samples
    return [
        (s.make_face_video(folder / "face 360p.mp4", n_frames=45, width=640, height=360, seed=1)["path"], "face"),
        (s.make_face_video(folder / "face 272p.mkv", n_frames=30, width=480, height=272, codec="hevc", seed=2,
                           zoom=(0.6, 1.3))["path"], "face"),
        (s.make_face_video(folder / "face 720p.mp4", n_frames=20, width=1280, height=720, seed=3)["path"], "face"),
        (s.make_face_video(folder / "face 180p.mp4", n_frames=60, width=320, height=180, seed=4)["path"], "face"),
        (s.make_precropped_video(folder / "precropped.mp4", n_frames=24)["path"], "face"),
        (s.make_noface_video(folder / "noface.mp4", n_frames=15, width=320, height=180)["path"], "noface"),
        (s.make_corrupt_file(folder / "corrupt.mp4")["path"], "error"),
    ]


def make_repo(work: Path, models: Optional[Path]) -> Path:
    from dfserve.serving.repo import build_repo

    if models is None:
        from dfserve.export.onnx_export import export_models

        models = work / "models"
        export_models(models, random_init=True, seed=0)
    return build_repo(work / "model_repository", "cpu", models)


# ------------------------------------------------------------------------------------------ memory
class Memory:
    """Samples the server's process tree (tritonserver, its python model processes) and /dev/shm."""

    def __init__(self, root_pid: int, interval: float):
        import psutil

        self.psutil = psutil
        self.root = psutil.Process(root_pid)
        self.interval = interval
        self.samples: list = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self.t0 = time.monotonic()

    @staticmethod
    def _model_name(cmdline: list) -> str:
        for n, a in enumerate(cmdline):
            if a.endswith("model.py"):
                model = Path(a).parent.parent.name
                inst = next((b for b in cmdline[n + 1:] if b.startswith(model + "_")), model)
                return inst
        return "python_model"

    def processes(self) -> dict:
        """{name: {"rss_mb", "uss_mb"}} for tritonserver and each python model process (instance name)."""
        out = {}
        try:
            procs = self.root.children(recursive=True)
        except self.psutil.Error:
            return out
        for p in procs:
            try:
                name = p.name()
                if name.startswith("tritonserver"):
                    key = "tritonserver"
                elif name.startswith("triton_python"):
                    key = self._model_name(p.cmdline())
                else:
                    continue
                m = p.memory_full_info()
                out[key] = {"pid": p.pid, "rss_mb": round(m.rss / MB, 1), "uss_mb": round(m.uss / MB, 1)}
                region = next((a for a in p.cmdline() if a.startswith("triton_python_backend_shm_region")), None)
                if region:  # this model's python-backend shared-memory pool (it grows, never shrinks)
                    try:
                        out[key]["shm_mb"] = round(os.stat(f"/dev/shm/{region}").st_blocks * 512 / MB, 1)
                    except OSError:
                        pass
            except self.psutil.Error:
                continue
        return out

    def sample(self, phase: str) -> dict:
        procs = self.processes()
        models = [v for k, v in procs.items() if k != "tritonserver"]
        s = {"t": round(time.monotonic() - self.t0, 1), "phase": phase, "load_1m": round(os.getloadavg()[0], 2),
             "server_uss_mb": procs.get("tritonserver", {}).get("uss_mb"),
             "server_rss_mb": procs.get("tritonserver", {}).get("rss_mb"),
             "models_uss_mb": round(sum(v["uss_mb"] for v in models), 1),
             "models_rss_mb": round(sum(v["rss_mb"] for v in models), 1),
             "model_processes": len(models), "shm": shm_usage(), "processes": procs}
        s["total_uss_mb"] = round(s["models_uss_mb"] + (s["server_uss_mb"] or 0), 1)
        with self._lock:
            self.samples.append(s)
        return s

    def start(self, phase: Callable[[], str]) -> None:
        def loop():
            while not self._stop.wait(self.interval):
                self.sample(phase())

        self._thread = threading.Thread(target=loop, daemon=True, name="soak-memory")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def shm_usage() -> dict:
    """/dev/shm: bytes in use, and the files of dfserve clients and of the python backend (count, bytes)."""
    out = {}
    try:
        st = os.statvfs("/dev/shm")
        out["used_mb"] = round((st.f_blocks - st.f_bfree) * st.f_frsize / MB, 1)
    except OSError:
        out["used_mb"] = None
    for key, pattern in (("dfserve_client", "/dev/shm/dfserve-*"),
                         ("python_backend", "/dev/shm/triton_python_backend_shm_region_*")):
        n, size = 0, 0
        for f in glob.glob(pattern):
            try:
                size += os.stat(f).st_blocks * 512
                n += 1
            except OSError:
                pass
        out[key] = {"files": n, "mb": round(size / MB, 1)}
    return out


def registered_regions(url: str) -> Optional[list]:
    """Names of the system shared-memory regions registered on the server (gRPC: HTTP's API is restricted)."""
    try:
        import tritonclient.grpc as grpcclient

        c = grpcclient.InferenceServerClient(url=url)
        try:
            return sorted(r.name for r in c.get_system_shared_memory_status().regions.values())
        finally:
            c.close()
    except Exception:  # noqa: BLE001 - reported as unknown
        return None


def fixes_env(without: set) -> dict:
    env = {}
    if "ort" in without:
        env["DFSERVE_ORT_RELEASE"] = "0"
    if "trim" in without:
        env["DFSERVE_MALLOC_TRIM"] = "0"
    if "arena-max" in without:
        env["MALLOC_ARENA_MAX"] = str(8 * (os.cpu_count() or 1))  # glibc's own limit on 64-bit
    return env


def env_seen(pid: int) -> dict:
    """The memory settings a python model process really got (its /proc environ)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return {}
    keys = ("MALLOC_ARENA_MAX", "DFSERVE_ORT_RELEASE", "DFSERVE_MALLOC_TRIM")
    env = dict(x.decode(errors="replace").split("=", 1) for x in raw if b"=" in x)
    return {k: env.get(k) for k in keys}


# ------------------------------------------------------------------------------------------ clients
class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = {"video": 0, "frames": 0}
        self.failures: list = []
        self.latencies: list = []
        self.in_flight = 0

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)


def _check(row: dict, expect: str) -> Optional[str]:
    err = row.get("error")
    if expect == "face":
        if err is not None or row.get("label") not in ("FAKE", "REAL"):
            return f"no verdict: {err}"
    elif expect == "noface":
        if row.get("label") is not None:
            return f"a verdict for a video without a face: {row.get('label')}"
    elif expect == "error":
        if not err or err.get("type") != "VideoError":
            return f"expected a VideoError row, got {err}"
    return None


def client_loop(cid: int, url: str, clips: list, stop: threading.Event, st: Stats, reconnect: int,
                timeout: float) -> None:
    from dfserve.client import DeepfakeClient
    from dfserve.client.triton import RemoteAggregate
    from dfserve.pipeline.frames_scoring import FramesModels, score_video_frames
    from dfserve.pipeline.options import ScoreOptions
    from dfserve.pipeline.sampling import parse_policy

    rnd = random.Random(cid)
    c = None
    model_id = None
    done = 0
    try:
        while not stop.is_set():
            if c is None or (reconnect and done and done % reconnect == 0):
                if c is not None:
                    c.close()  # releases this client's shared-memory region
                c = DeepfakeClient(url, timeout=timeout)
                model_id = model_id or c.model_info()["model_id"]
            path, expect = clips[rnd.randrange(len(clips))]
            sample = rnd.choice(SAMPLES)
            kind = "video" if expect == "error" or rnd.random() < 0.5 else "frames"
            t0 = time.monotonic()
            with st.lock:
                st.in_flight += 1
            try:
                if kind == "video":
                    row = c.score_video(path, sample=sample, timeline=rnd.random() < 0.3,
                                        faces="precropped" if "precropped" in path else "largest")
                else:
                    opts = ScoreOptions(sample=parse_policy(sample), chunk=rnd.choice(CHUNKS),
                                        faces="precropped" if "precropped" in path else "largest").validate()

                    def fused(frames, c=c):
                        r = c.infer_frames(frames)
                        return r.boxes, r.has_face, r.logits

                    models = FramesModels(frames_fn=fused, classify_fn=c.classify_faces)
                    row = score_video_frames(path, opts, models, model_id, sink=RemoteAggregate(c, opts.head))
                bad = _check(row, expect)
                lat = time.monotonic() - t0
                with st.lock:
                    st.requests[kind] += 1
                    if bad:
                        st.failures.append(f"client {cid} {kind} {Path(path).name} {sample}: {bad}")
                    else:
                        st.latencies.append(lat)
            except Exception as exc:  # noqa: BLE001 - every failure is counted, the soak goes on
                with st.lock:
                    st.requests[kind] += 1
                if not stop.aborted:  # after Ctrl-C / a failed run the server is gone: not the soak's failure
                    st.fail(f"client {cid} {kind} {Path(path).name} {sample}: {type(exc).__name__}: {exc}"[:400])
            finally:
                with st.lock:
                    st.in_flight -= 1
            done += 1
    except Exception as exc:  # noqa: BLE001
        st.fail(f"client {cid}: {type(exc).__name__}: {exc}"[:400])
    finally:
        if c is not None:
            c.close()


class StopFlag(threading.Event):
    aborted = False


# ------------------------------------------------------------------------------------------ the soak
def run_soak(clients: int = 8, duration: float = 180.0, warmup: Optional[float] = None, drain: float = 120.0,
             settle: float = 10.0, interval: float = 2.0, models: Optional[Path] = None, without: tuple = (),
             reconnect: int = 10, timeout: float = 300.0, progress: Optional[Callable[[str], None]] = None,
             progress_every: float = 15.0) -> dict:
    import psutil  # noqa: F401 - fail early when it is missing

    say = progress or (lambda _m: None)
    warmup = min(30.0, duration / 4) if warmup is None else warmup
    work = Path(tempfile.mkdtemp(prefix="dfserve-triton-soak-"))
    server = None
    mem = None
    stop = StopFlag()
    threads: list = []
    st = Stats()
    phase = {"now": "ready"}
    try:
        t_prep = time.monotonic()
        say("generating clips and the model repository ...")
        clips = make_clips(work / "clips")
        repo = make_repo(work, models)
        grpc_port, http_port, metrics_port = _free_port(), _free_port(), _free_port()
        env = {**os.environ, **fixes_env(set(without))}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        cmd = [sys.executable, "-m", "dfserve.cli", "serve", "--repo", str(repo), "--host", "127.0.0.1",
               "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--metrics-port", str(metrics_port)]
        log = open(work / "serve.log", "wb")
        say(f"starting dfserve serve (gRPC 127.0.0.1:{grpc_port}) ...")
        t_start = time.monotonic()
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        url = f"127.0.0.1:{grpc_port}"
        from dfserve.client import DeepfakeClient

        with DeepfakeClient(url, timeout=60) as c:
            while not c.is_ready():
                if server.poll() is not None or time.monotonic() - t_start > 300:
                    raise RuntimeError("dfserve serve did not become ready:\n" +
                                       (work / "serve.log").read_text(errors="replace")[-3000:])
                time.sleep(0.5)
        ready_s = time.monotonic() - t_start
        mem = Memory(server.pid, interval)
        time.sleep(2.0)
        ready = mem.sample("ready")
        stub_env = {k: env_seen(v["pid"]) for k, v in ready["processes"].items() if k != "tritonserver"}
        backend_regions = _backend_regions(server.pid)
        say(f"ready in {ready_s:.0f} s: tritonserver USS {ready['server_uss_mb']} MB, "
            f"{ready['model_processes']} python model processes USS {ready['models_uss_mb']} MB")

        mem.start(lambda: phase["now"])
        load_start = os.getloadavg()
        t0 = time.monotonic()
        phase["now"] = "warmup"
        threads = [threading.Thread(target=client_loop, args=(i, url, clips, stop, st, reconnect, timeout),
                                    daemon=True, name=f"soak-client-{i}") for i in range(clients)]
        for t in threads:
            t.start()
        next_report = t0 + progress_every
        warm = None
        while time.monotonic() - t0 < duration:
            time.sleep(0.5)
            now = time.monotonic()
            if warm is None and now - t0 >= warmup:
                warm = mem.sample("warm")
                phase["now"] = "load"
            if server.poll() is not None:
                raise RuntimeError("dfserve serve exited during the soak:\n" +
                                   (work / "serve.log").read_text(errors="replace")[-3000:])
            if now >= next_report:
                next_report += progress_every
                last = mem.samples[-1]
                with st.lock:
                    n, f, lat = sum(st.requests.values()), len(st.failures), list(st.latencies)
                say(f"[{now - t0:5.0f} s] requests {n}, failures {f}, p50 {pct(lat, 50)} s; python models USS "
                    f"{last['models_uss_mb']} MB, tritonserver USS {last['server_uss_mb']} MB, /dev/shm "
                    f"{last['shm']['used_mb']} MB, load {last['load_1m']}")
        end_load = mem.sample("end_of_load")
        stop.set()
        phase["now"] = "drain"
        say(f"stopping the clients (waiting at most {drain:.0f} s for {st.in_flight} requests in flight) ...")
        deadline = time.monotonic() + drain
        for t in threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))
        stuck = [t.name for t in threads if t.is_alive()]
        for name in stuck:
            st.fail(f"{name}: still in a request {drain:.0f} s after the end")
        wall = time.monotonic() - t0
        load_end = os.getloadavg()
        phase["now"] = "after"
        time.sleep(settle)
        after = mem.sample("after_clients")
        regions = registered_regions(url)
        own_after = glob.glob(f"/dev/shm/dfserve-{os.getpid()}-*")
        mem.stop()
        say("stopping the server ...")
        server_stop_s = _stop_server(server)
        server = None
        shm_after_stop = shm_usage()
        shm_after_stop["this_server_regions_left"] = [r for r in backend_regions if os.path.exists(f"/dev/shm/{r}")]
        shm_after_stop["this_process_client_regions_left"] = glob.glob(f"/dev/shm/dfserve-{os.getpid()}-*")

        samples = mem.samples
        during = [s for s in samples if s["phase"] in ("warmup", "load", "end_of_load", "warm")]
        after_warm = [s for s in samples if s["phase"] in ("load", "end_of_load")] or during
        peak = max(during, key=lambda s: s["total_uss_mb"]) if during else end_load
        warm = warm or end_load
        warm_peak = max([s["models_uss_mb"] for s in samples if s["phase"] in ("warmup", "warm")] or
                        [warm["models_uss_mb"]])
        lat = st.latencies
        slope = _slope([(s["t"], s["models_uss_mb"]) for s in after_warm])
        keep = ("server_uss_mb", "server_rss_mb", "models_uss_mb", "models_rss_mb", "total_uss_mb")

        def point(s):
            return {**{k: s[k] for k in keep}, "t_s": s["t"], "shm_used_mb": s["shm"]["used_mb"]}

        return {
            "clients": clients, "duration_s": duration, "warmup_s": warmup, "wall_s": round(wall, 1),
            "prepare_s": round(t_start - t_prep, 1), "server_ready_s": round(ready_s, 1),
            "fixes_off": sorted(without), "fixes_env_in_model_processes": next(iter(stub_env.values()), {}),
            "load_average_1m": {"start": round(load_start[0], 2), "end": round(load_end[0], 2),
                                "mean_during": round(sum(s["load_1m"] for s in during) / max(1, len(during)), 2)},
            "clips": [{"name": Path(p).name, "expect": e} for p, e in clips],
            "requests": sum(st.requests.values()), "requests_by_path": dict(st.requests),
            "requests_per_s": round(sum(st.requests.values()) / wall, 3) if wall else None,
            "failures": len(st.failures), "failure_examples": st.failures[:10],
            "latency_s": {"p50": pct(lat, 50), "p90": pct(lat, 90), "p99": pct(lat, 99),
                          "max": round(max(lat), 3) if lat else None, "n": len(lat)},
            "memory_mb": {"ready": point(ready), "warm": point(warm), "peak": point(peak),
                          "end_of_load": point(end_load), "after_clients_stopped": point(after)},
            "models_uss_warmup_peak_mb": warm_peak,
            "models_uss_growth_after_warmup_mb": round(max(s["models_uss_mb"] for s in after_warm) - warm_peak, 1),
            "models_uss_slope_after_warmup_mb_per_min": slope,
            "per_process_mb": {k: {"ready_uss": v["uss_mb"], "peak_uss": max(s["processes"].get(k, {}).get(
                "uss_mb", 0) for s in samples), "after_uss": after["processes"].get(k, {}).get("uss_mb"),
                "end_of_load_rss": end_load["processes"].get(k, {}).get("rss_mb"),
                "shm_pool_after": after["processes"].get(k, {}).get("shm_mb")}
                for k, v in ready["processes"].items()},
            "shm": {"peak_used_mb": max((s["shm"]["used_mb"] or 0) for s in samples),
                    "peak_client_regions": max(s["shm"]["dfserve_client"]["files"] for s in samples),
                    "during_end_of_load": end_load["shm"], "after_clients_stopped": after["shm"],
                    "registered_regions_after_clients_stopped": regions,
                    "this_process_client_regions_after_clients_stopped": own_after,
                    "python_backend_regions_of_this_server": len(backend_regions), "after_server_stopped": shm_after_stop},
            "server_stop_s": server_stop_s,
            "timeline": [{"t_s": s["t"], "phase": s["phase"], "models_uss_mb": s["models_uss_mb"],
                          "server_uss_mb": s["server_uss_mb"], "shm_used_mb": s["shm"]["used_mb"],
                          "python_backend_shm_mb": s["shm"]["python_backend"]["mb"],
                          "load_1m": s["load_1m"]} for s in samples],
        }
    finally:
        main = threading.current_thread() is threading.main_thread()
        old_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None  # a 2nd Ctrl-C: still clean
        try:
            stop.aborted = True
            stop.set()
            if mem is not None:
                mem.stop()
            if server is not None:  # interrupted or failed: the server goes down first, the clients then fail fast
                _stop_server(server)
            for t in threads:
                t.join(timeout=20)
            shutil.rmtree(work, ignore_errors=True)
        finally:
            if main:
                signal.signal(signal.SIGINT, old_sigint)


def _backend_regions(root_pid: int) -> list:
    """The /dev/shm regions of this server's python model processes (named on their command lines)."""
    import psutil

    names = set()
    try:
        for p in psutil.Process(root_pid).children(recursive=True):
            try:
                names.update(a for a in p.cmdline() if a.startswith("triton_python_backend_shm_region"))
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return sorted(names)


def _slope(points: list) -> Optional[float]:
    """Least-squares slope of (t s, MB) in MB per minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return round(60 * sum((t - mt) * (v - mv) for t, v in points) / den, 1) if den else None


def _stop_server(proc: subprocess.Popen) -> Optional[float]:
    """SIGTERM to `dfserve serve` (it stops tritonserver and cleans up); SIGKILL to both after 60 s."""
    import psutil

    t = time.monotonic()
    if proc.poll() is not None:
        return None
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        kids = []
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    for k in kids:  # tritonserver runs in its own session: never leave it behind
        try:
            if k.is_running() and k.name().startswith("tritonserver"):
                os.killpg(k.pid, signal.SIGKILL)
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass
    return round(time.monotonic() - t, 1)


# ------------------------------------------------------------------------------------------ command line
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, help="folder made by `dfserve export` (default: seeded random weights)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    ap.add_argument("--duration", type=float, default=180.0, help="seconds of load (default 180)")
    ap.add_argument("--warmup", type=float, help="seconds counted as warm-up (default min(30, duration/4))")
    ap.add_argument("--drain", type=float, default=120.0, help="most seconds to wait for requests in flight")
    ap.add_argument("--settle", type=float, default=10.0, help="idle seconds before the after-clients measurement")
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between memory samples")
    ap.add_argument("--reconnect", type=int, default=10, help="each client reconnects every N requests (0: never)")
    ap.add_argument("--without", default="", help=f"fixes to turn off: comma list of {', '.join(FIXES)}, or all")
    ap.add_argument("--label", default=None, help="name of this run in the JSON (default: after, or before with "
                                                   "--without all)")
    ap.add_argument("--note", default="", help="free text recorded with the run")
    ap.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/<machine>/triton_soak.json)")
    ap.add_argument("--no-write", action="store_true", help="print the results, write nothing")
    args = ap.parse_args(argv)
    without = set(FIXES) if args.without.strip() == "all" else {w.strip() for w in args.without.split(",") if w.strip()}
    if without - set(FIXES):
        ap.error(f"--without: unknown {', '.join(sorted(without - set(FIXES)))} (choose from {', '.join(FIXES)}, all)")
    label = args.label or ("before" if without == set(FIXES) else "after" if not without else
                           "without-" + "-".join(sorted(without)))

    from dfserve.bench.run import machine_info, machine_slug

    def say(msg):
        print(f"triton_soak: {msg}", file=sys.stderr, flush=True)

    def on_term(_sig, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)  # SIGTERM stops as cleanly as Ctrl-C
    try:
        res = run_soak(args.clients, args.duration, args.warmup, args.drain, args.settle, args.interval, args.models,
                       tuple(sorted(without)), args.reconnect, progress=say)
    except KeyboardInterrupt:
        say("interrupted: server stopped, clients closed, nothing written")
        return 130
    info = machine_info()
    res = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "command": shlex.join(["python", "benchmarks/triton_soak.py"] + (sys.argv[1:] if argv is None else list(argv))),
           "note": args.note, **res}
    summary = {k: res[k] for k in ("requests", "failures", "latency_s", "models_uss_growth_after_warmup_mb",
                                   "models_uss_slope_after_warmup_mb_per_min")}
    summary["memory_mb"] = {k: {m: v[m] for m in ("models_uss_mb", "server_uss_mb", "shm_used_mb")}
                            for k, v in res["memory_mb"].items()}
    print(json.dumps(summary, indent=1))
    if not args.no_write:
        out = args.out or (HERE / "results" / machine_slug(info) / "triton_soak.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        doc = json.loads(out.read_text()) if out.is_file() else {}
        doc["machine"] = {k: info[k] for k in ("cpu", "cores", "memory_gb", "gpu")}
        doc.setdefault("runs", {})[label] = res
        doc["comparison"] = _compare(doc["runs"])
        out.write_text(json.dumps(doc, indent=1) + "\n")
        say(f"wrote run {label!r} to {out}")
    return 0 if res["failures"] == 0 else 1


def _compare(runs: dict) -> dict:
    """One line per run: the figures to compare before/after."""
    out = {}
    for label, r in runs.items():
        m = r["memory_mb"]
        out[label] = {"fixes_off": r["fixes_off"], "requests": r["requests"], "failures": r["failures"],
                      "p50_s": r["latency_s"]["p50"], "p99_s": r["latency_s"]["p99"],
                      "models_uss_mb": {k: m[k]["models_uss_mb"] for k in m},
                      "server_uss_mb": {k: m[k]["server_uss_mb"] for k in m},
                      "models_uss_growth_after_warmup_mb": r["models_uss_growth_after_warmup_mb"],
                      "models_uss_slope_after_warmup_mb_per_min": r["models_uss_slope_after_warmup_mb_per_min"],
                      "load_average_1m_mean": r["load_average_1m"]["mean_during"]}
    return out


if __name__ == "__main__":
    sys.exit(main())
