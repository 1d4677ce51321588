#!/usr/bin/env python
"""Bounded soak of `dfserve web`: N concurrent clients upload videos and poll their jobs, loopback only.

Starts its own server (`dfserve web` on a free 127.0.0.1 port, fresh data dir), runs for --duration
seconds (then waits at most --drain seconds for jobs in flight) and stops by itself. Reports requests,
failures (goal 0), p50/p99 job latency (submit -> result seen by the client) and the server's peak RSS.

    python benchmarks/web_soak.py --models models/            # 8 clients, 120 s
    python benchmarks/web_soak.py --models models/ --clients 8 --duration 300 --out soak.json
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_clips(folder: Path) -> list:
    """Small real-face clips (and one without a face, which must fail with NoFaceError, not count as a failure)."""
    from dfserve import samples

    folder.mkdir(parents=True, exist_ok=True)
    clips = [
        (samples.make_face_video(folder / "face 30.mp4", n_frames=30, width=320, height=180, seed=1)["path"], "done"),
        (samples.make_face_video(folder / "face 60.mp4", n_frames=60, width=320, height=180, seed=2)["path"], "done"),
        (samples.make_face_video(folder / "face hevc.mkv", n_frames=30, width=320, height=180, codec="hevc",
                                 seed=3)["path"], "done"),
        (samples.make_noface_video(folder / "noface.mp4", n_frames=15, width=320, height=180)["path"], "failed"),
    ]
    return clips


def pct(xs, q):
    from dfserve.bench.run import percentile

    return percentile(xs, q, ndigits=3)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.submits = 0
        self.busy_503 = 0
        self.jobs_done = 0
        self.jobs_failed_expected = 0
        self.failures = []
        self.latencies = []
        self.scoring = []  # the scorer's own time per job (result.elapsed_s): latency minus queueing and polling
        self.runtimes = set()  # what scored the jobs (the rows' `runtime`)

    def fail(self, what: str):
        with self.lock:
            self.failures.append(what)


def client_loop(cid: int, url: str, clips: list, stop_at: float, drain_at: float, st: Stats, options: dict):
    import httpx

    rnd = random.Random(cid)
    with httpx.Client(base_url=url, timeout=60) as c:
        while time.time() < stop_at:
            path, expect = clips[rnd.randrange(len(clips))]
            t0 = time.time()
            try:
                with open(path, "rb") as fh:
                    r = c.post("/v1/jobs", files={"file": (Path(path).name, fh, "video/mp4")}, data=options)
            except httpx.HTTPError as exc:
                st.fail(f"submit: {type(exc).__name__}: {exc}")
                continue
            with st.lock:
                st.requests += 1
                st.submits += 1
            if r.status_code == 503:
                with st.lock:
                    st.busy_503 += 1
                time.sleep(float(r.headers.get("retry-after", "1")))
                continue
            if r.status_code != 202:
                st.fail(f"submit: HTTP {r.status_code} {r.text[:200]}")
                continue
            job_id = r.json()["id"]
            while True:
                if time.time() > drain_at:
                    st.fail(f"job {job_id}: not finished before the drain deadline")
                    return
                time.sleep(0.25)
                try:
                    g = c.get(f"/v1/jobs/{job_id}")
                except httpx.HTTPError as exc:
                    st.fail(f"poll: {type(exc).__name__}: {exc}")
                    continue
                with st.lock:
                    st.requests += 1
                if g.status_code != 200:
                    st.fail(f"poll: HTTP {g.status_code} {g.text[:200]}")
                    break
                job = g.json()
                if job["status"] in ("queued", "running"):
                    continue
                lat = time.time() - t0
                if job["status"] != expect:
                    st.fail(f"job {job_id} ({Path(path).name}): {job['status']} {job.get('error')}")
                else:
                    with st.lock:
                        st.latencies.append(lat)
                        if (job.get("result") or {}).get("elapsed_s") is not None:
                            st.scoring.append(job["result"]["elapsed_s"])
                        if (job.get("result") or {}).get("runtime"):
                            st.runtimes.add(job["result"]["runtime"])
                        if expect == "done":
                            st.jobs_done += 1
                        else:
                            st.jobs_failed_expected += 1
                # read the timeline of good jobs, then delete every job (keeps the data dir small)
                try:
                    if expect == "done":
                        tl = c.get(f"/v1/jobs/{job_id}/timeline")
                        if tl.status_code != 200:
                            st.fail(f"timeline: HTTP {tl.status_code}")
                    d = c.delete(f"/v1/jobs/{job_id}")
                    if d.status_code != 204:
                        st.fail(f"delete: HTTP {d.status_code}")
                    with st.lock:
                        st.requests += 2 if expect == "done" else 1
                except httpx.HTTPError as exc:
                    st.fail(f"timeline/delete: {type(exc).__name__}: {exc}")
                break


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--models", type=Path, help="folder made by `dfserve export`")
    src.add_argument("--checkpoint", type=Path, help="seed checkpoint")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of submitting (default 120)")
    ap.add_argument("--drain", type=float, default=120.0, help="extra seconds allowed for jobs in flight")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--queue", type=int, default=16)
    ap.add_argument("--sample", default="all", help="sampling option sent with every job")
    ap.add_argument("--note", default="", help="free text recorded in the results")
    ap.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/<machine>/web_soak.json)")
    args = ap.parse_args(argv)

    import psutil

    from dfserve.bench.run import machine_info, machine_slug

    work = Path(tempfile.mkdtemp(prefix="dfserve-web-soak-"))
    clips = make_clips(work / "clips")
    port = free_port()
    cmd = [sys.executable, "-m", "dfserve.cli", "-q", "web", "--host", "127.0.0.1", "--port", str(port),
           "--data-dir", str(work / "data"), "--workers", str(args.workers), "--queue", str(args.queue),
           "--log-level", "warning"]
    cmd += ["--models", str(args.models)] if args.models else ["--checkpoint", str(args.checkpoint)]
    log = open(work / "server.log", "wb")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    import httpx

    t_start = time.time()
    while True:
        if server.poll() is not None or time.time() - t_start > 300:
            print((work / "server.log").read_text()[-3000:], file=sys.stderr)
            server.kill()
            return 1
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc = psutil.Process(server.pid)
    peak = {"rss": 0}
    sampling = threading.Event()

    def sample_rss():
        while not sampling.wait(0.25):
            try:
                rss = proc.memory_info().rss + sum(ch.memory_info().rss for ch in proc.children(recursive=True))
            except psutil.Error:
                return
            peak["rss"] = max(peak["rss"], rss)

    rss_ready = proc.memory_info().rss
    threading.Thread(target=sample_rss, daemon=True).start()
    st = Stats()
    load_before = os.getloadavg()
    t0 = time.time()
    stop_at, drain_at = t0 + args.duration, t0 + args.duration + args.drain
    threads = [threading.Thread(target=client_loop, args=(i, url, clips, stop_at, drain_at, st,
                                                          {"sample": args.sample}), daemon=True)
               for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, drain_at + 30 - time.time()))
    wall = time.time() - t0
    sampling.set()
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()
    info = machine_info()
    lat = st.latencies
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name] + (sys.argv[1:] if argv is None else list(argv))),
        "machine": {k: info[k] for k in ("cpu", "cores", "memory_gb", "gpu")},
        "load_average_1m": {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2)},
        "server": {"workers": args.workers, "queue": args.queue,
                   "runtime": ", ".join(sorted(st.runtimes)) + " (embedded, CPU; the jobs' rows)",
                   "bind": "127.0.0.1 (loopback only)"},
        "load": {"clients": args.clients, "duration_s": args.duration, "wall_s": round(wall, 1),
                 "clips": [{"name": Path(p).name, "expect": e} for p, e in clips], "sample": args.sample,
                 "client_cycle": "POST /v1/jobs -> poll GET /v1/jobs/{id} every 0.25 s -> GET timeline -> DELETE"},
        "requests": st.requests,
        "jobs_submitted": st.submits,
        "jobs_done": st.jobs_done,
        "jobs_failed_as_expected": st.jobs_failed_expected,
        "rejected_503_queue_full": st.busy_503,
        "failures": len(st.failures),
        "failure_examples": st.failures[:10],
        "job_latency_s": {"p50": pct(lat, 50), "p90": pct(lat, 90), "p99": pct(lat, 99),
                          "max": round(max(lat), 3) if lat else None, "n": len(lat)},
        "job_latency_note": "submit -> finished job seen by the client's poll: mostly time waiting in the queue "
                            "behind the other clients' jobs (8 clients, --workers jobs at a time)",
        "scoring_s_per_job": {"p50": pct(st.scoring, 50), "p99": pct(st.scoring, 99)},
        "jobs_per_s": round(len(lat) / wall, 3) if wall else None,
        "server_rss_mb": {"ready": round(rss_ready / 2**20, 1), "peak": round(peak["rss"] / 2**20, 1)},
        "note": args.note,
    }
    out = args.out or (HERE / "results" / machine_slug(info) / "web_soak.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("requests", "jobs_submitted", "failures", "job_latency_s",
                                             "scoring_s_per_job", "jobs_per_s", "server_rss_mb")}, indent=1))
    print(f"wrote {out}", file=sys.stderr)
    return 0 if not st.failures else 1


if __name__ == "__main__":
    sys.exit(main())
