"""`dfserve score --ray ADDRESS` on a real two-node Ray cluster on this machine.

A head and a worker node are separate `ray start --block` process groups (their own GCS / raylets,
1 CPU each) on loopback; the CLI connects to the head's address as a user would. The worker node
is SIGKILLed mid-run in the last test.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dfserve.pipeline.results import load_rows

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray", reason="needs the ray extra: pip install 'dfserve[ray]'")

RAY_BIN = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    # an ephemeral port: outside Ray's default worker port range (10002-19999)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ)
    # workers (forked by the raylets) import this checkout's dfserve, as an editable install would
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["RAY_AUTH_MODE"] = "disabled"  # a throw-away loopback cluster: no token to share
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["OMP_NUM_THREADS"] = "1"
    return env


class _Cluster:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="dfray", dir="/tmp")  # short: Ray's unix socket paths
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs = {}
        common = ["--block", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--object-store-memory=100000000",
                  "--disable-usage-stats", f"--dashboard-agent-listen-port={_free_port()}"]
        self._start("head", ["--head", f"--port={self.port}", "--include-dashboard=false",
                             f"--temp-dir={self.tmp}", f"--ray-client-server-port={_free_port()}"] + common)
        self._wait_nodes(1)
        self._start("worker", [f"--address={self.address}"] + common)
        self._wait_nodes(2)

    def _start(self, name, args):
        log = open(Path(self.tmp) / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen([RAY_BIN, "start", *args], stdout=log, stderr=subprocess.STDOUT,
                                            env=_env(), start_new_session=True)

    def _wait_nodes(self, n, timeout=90):
        code = ("import ray,time,sys\n"
                f"ray.init(address='{self.address}', logging_level='ERROR', log_to_driver=False)\n"
                f"t=time.time()\nwhile len([x for x in ray.nodes() if x['Alive']]) != {n} and time.time()-t < {timeout}:\n"
                "    time.sleep(0.5)\n"
                f"sys.exit(0 if len([x for x in ray.nodes() if x['Alive']]) == {n} else 1)\n")
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(p.poll() is not None for p in self.procs.values()):
                raise RuntimeError(f"ray start exited:\n{self.log_tail()}")
            r = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True,
                               timeout=timeout + 30)
            if r.returncode == 0:
                return
            time.sleep(1)
        raise RuntimeError(f"the Ray cluster did not reach {n} nodes:\n{self.log_tail()}")

    def log_tail(self):
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in Path(self.tmp).glob("*.log"))

    def kill(self, name):
        """SIGKILL a node: its `ray start`, GCS / raylet and every worker process (one process group)."""
        import psutil

        p = self.procs.pop(name, None)
        if p is not None:
            # the raylet's worker processes may sit in sessions of their own: take every descendant too,
            # all at once, so no actor of this node finishes its video after the node is gone (seen in
            # CI: an actor outlived its raylet long enough to deliver its row, and nothing was retried)
            try:
                family = psutil.Process(p.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                family = []
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for c in family:
                try:
                    c.kill()
                except psutil.NoSuchProcess:
                    pass
            p.wait(timeout=30)

    def shutdown(self):
        for name in list(self.procs):
            self.kill(name)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    c = _Cluster()
    try:
        yield c
    finally:
        c.shutdown()


def _cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "dfserve.cli", *map(str, args)], capture_output=True, text=True,
                          env=env or _env(), timeout=300, **kw)


@pytest.fixture(scope="module")
def small_videos(tmp_path_factory):
    from dfserve import samples

    d = tmp_path_factory.mktemp("ray videos") / "with space"
    d.mkdir()
    for k in range(6):
        samples.make_face_video(d / f"v{k}.mp4", n_frames=18, width=320, height=180, seed=k)
    samples.make_corrupt_file(d / "corrupt.mp4")
    return d


# --------------------------------------------------------------------------------------- pure parts
def test_plan_actors_from_node_resources():
    from dfserve.distributed.ray_scorer import NodeResources, plan_actors
    from dfserve.errors import UsageError

    two = [NodeResources("a", "h", 2), NodeResources("b", "h", 1)]
    assert [(s.node_id, s.num_cpus, s.threads) for s in plan_actors(two)] == [("a", 2, 2), ("b", 1, 1)]
    big = plan_actors([NodeResources("a", "h", 16), NodeResources("head", "h", 0)])
    assert [(s.node_id, s.num_cpus, s.threads) for s in big] == [("a", 4, 4)] * 4
    assert [(s.node_id, s.num_cpus) for s in plan_actors([NodeResources("a", "h", 2)], actors=2)] == [("a", 1)] * 2
    gpus = plan_actors([NodeResources("g", "h", 8, 2), NodeResources("c", "h", 8)], gpu=True)
    assert [(s.node_id, s.num_gpus, s.num_cpus) for s in gpus] == [("g", 1, 4), ("g", 1, 4)]
    with pytest.raises(UsageError, match="no node of the Ray cluster has a GPU"):
        plan_actors(two, gpu=True)


# ------------------------------------------------------------------------------------ real cluster
def test_rows_equal_the_local_scorer_and_resume_works(cluster, exported, small_videos, tmp_path):
    from dfserve.pipeline.options import ScoreOptions
    from dfserve.scoring import ScorerConfig, score_paths

    local = score_paths([str(small_videos)], ScoreOptions(), ScorerConfig(models=exported.out_dir),
                        out=tmp_path / "local.jsonl", progress=False, summary=False)
    want = {r["path"]: r for r in local.rows}
    assert len(want) == 7

    out = tmp_path / "ray rows.jsonl"
    r = _cli("score", small_videos, "--models", exported.out_dir, "--out", out, "--ray", cluster.address,
             "--no-progress")
    assert r.returncode == 0, r.stderr + cluster.log_tail()
    rows = load_rows(out)
    assert sorted(x["path"] for x in rows) == sorted(want)
    for row in rows:
        ref = want[row["path"]]
        assert set(row) == set(ref) | {"node"}
        for k in ref:
            if k == "p_fake" and ref[k] is not None:
                assert abs(row[k] - ref[k]) <= 1e-6, row["path"]
            elif k != "elapsed_s":
                assert row[k] == ref[k], (row["path"], k)
    nodes = {x["node"] for x in rows}
    assert len(nodes) == 2, f"both nodes should have scored videos: {nodes}"
    assert "ray: 7 videos on 2 node(s)" in r.stderr and "frames/s" in r.stderr

    # --resume after a kill: keep 3 rows and a torn line; the rest are scored, each exactly once
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3][:25])
    r = _cli("score", small_videos, "--models", exported.out_dir, "--out", out, "--ray", cluster.address,
             "--resume", "--no-progress", "--no-summary")
    assert r.returncode == 0, r.stderr
    again = load_rows(out)
    assert sorted(x["path"] for x in again) == sorted(want)


def test_models_missing_on_the_nodes_is_reported(cluster, small_videos, tmp_path):
    r = _cli("score", small_videos, "--models", tmp_path / "not there", "--ray", cluster.address, "--no-progress")
    assert r.returncode == 1, r.stderr
    assert "no scorer actor could start" in r.stderr and "ModelFilesError" in r.stderr


def test_limits_reach_the_actors_an_over_limit_video_is_an_error_row(cluster, exported, small_videos, tmp_path):
    """Issue 25: the driver's limits (here DFSERVE_MAX_PIXELS) travel to the actors: an 8K frame is a row naming
    max_pixels, the other videos of the batch are scored."""
    from dfserve import samples

    d = tmp_path / "limits"
    d.mkdir()
    big = samples.make_8k_frame_video(d / "eight k.mp4")["path"]
    ok = str(shutil.copy(small_videos / "v0.mp4", d / "v0.mp4"))
    out = tmp_path / "rows.jsonl"
    r = _cli("score", d, "--models", exported.out_dir, "--out", out, "--ray", cluster.address, "--no-progress",
             env={**_env(), "DFSERVE_MAX_PIXELS": str(3840 * 2160)})
    assert r.returncode == 0, r.stderr + cluster.log_tail()
    rows = {x["path"]: x for x in load_rows(out)}
    assert rows[big]["error"]["type"] == "RequestLimitError" and rows[big]["error"]["limit"] == "max_pixels"
    assert rows[ok]["error"] is None and rows[ok]["label"] in ("FAKE", "REAL")


def test_worker_node_killed_mid_run_every_row_exactly_once(cluster, exported, tmp_path):
    """Runs last: SIGKILLs the worker node while both actors hold a video."""
    from dfserve import samples

    d = tmp_path / "longer"
    d.mkdir()
    paths = [str(samples.make_face_video(d / f"w{k}.mp4", n_frames=60, width=320, height=180, seed=k)["path"])
             for k in range(6)]
    out = tmp_path / "rows.jsonl"
    p = subprocess.Popen([sys.executable, "-m", "dfserve.cli", "score", str(d), "--models", str(exported.out_dir),
                          "--out", str(out), "--ray", cluster.address, "--no-progress"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.time() + 180
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 1) and p.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # the actor that wrote that row has its next video by now: both actors are busy
    assert p.poll() is None, "the run ended before the kill"
    cluster.kill("worker")
    _, err = p.communicate(timeout=240)
    assert p.returncode == 0, err
    rows = load_rows(out)
    assert sorted(r["path"] for r in rows) == sorted(paths), "every video exactly once"
    assert all(r["error"] is None and r["label"] in ("FAKE", "REAL") for r in rows), rows
    assert "retrying on another actor" in err, err[-3000:]
