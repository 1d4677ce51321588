"""Against a real tritonserver process (nvidia-pytriton's binary) on free loopback ports."""
import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from dfserve.client import DeepfakeClient
from dfserve.client.remote import RemoteScorer
from dfserve.errors import ServerError
from dfserve.pipeline.engine import ScoreOptions, Scorer
from dfserve.pipeline.runtimes.ort import OnnxRuntime
from dfserve.pipeline.sampling import parse_policy
from dfserve.serving.repo import build_repo
from dfserve.serving.server import TritonServer
from dfserve import spec as spec_models

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):
    repo = build_repo(tmp_path_factory.mktemp("model repo"), "cpu", exported.out_dir)
    with TritonServer(repo) as srv:
        yield srv


@pytest.fixture(scope="module")
def runtime(exported):
    return OnnxRuntime(exported.out_dir)


def _embedded(runtime, paths, **kw):
    return {r["path"]: r for r in Scorer(runtime, ScoreOptions(**kw)).score(paths)}


CASES = [
    dict(sample="every:3", head="mean", timeline=True),
    dict(sample="first:12", head="last"),
    dict(sample="uniform:7", head="mean", no_face="frame"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['sample']}-{c['head']}")
def test_frames_ensemble_and_aggregator_match_embedded(server, runtime, videos, case):
    paths = [videos[k]["path"] for k in ("face", "hevc", "noface", "corrupt")]
    kw = dict(case, sample=parse_policy(case["sample"]))
    emb = _embedded(runtime, paths, **kw)
    rem = {r["path"]: r for r in RemoteScorer(server.grpc_url, ScoreOptions(**kw)).score(paths)}
    assert set(rem) == set(paths)
    for p in paths:
        e, r = emb[p], rem[p]
        assert (e["error"] or {}).get("type") == (r["error"] or {}).get("type")
        assert e["label"] == r["label"] and e["frames_scored"] == r["frames_scored"]
        if e["p_fake"] is not None:
            assert abs(e["p_fake"] - r["p_fake"]) <= 1e-4
        assert r["model"] == e["model"]
        if case.get("timeline") and e["timeline"]:
            for a, b in zip(e["timeline"], r["timeline"]):
                assert a[0] == b[0] and (a[1] is None) == (b[1] is None)
                if a[1] is not None:
                    assert abs(a[1] - b[1]) <= 1e-4 and np.allclose(a[2], b[2], atol=0.11)


def test_precropped_through_the_server(server, runtime, videos):
    kw = dict(sample=parse_policy("first:16"), faces="precropped")
    p = videos["precropped"]["path"]
    e = _embedded(runtime, [p], **kw)[p]
    r = next(RemoteScorer(server.grpc_url, ScoreOptions(**kw)).score([p]))
    assert abs(e["p_fake"] - r["p_fake"]) <= 1e-4 and r["frames_scored"] == 16


@pytest.mark.parametrize("head", ["mean", "last"])
def test_whole_video_model_matches_embedded(server, runtime, videos, head):
    p = videos["face"]["path"]
    e = _embedded(runtime, [p], sample=parse_policy("every:2"), head=head)[p]
    with DeepfakeClient(server.grpc_url) as c:
        row = c.score_video(p, sample="every:2", head=head)
    assert row["path"] == p and row["label"] == e["label"] and row["frames_scored"] == e["frames_scored"]
    assert abs(row["p_fake"] - e["p_fake"]) <= 1e-4
    for key in ("confidence", "frames_decoded", "frames_with_face", "duration_s", "fps", "model", "error"):
        assert key in row


def test_corrupt_video_is_a_clear_error_and_the_server_stays_ready(server, videos):
    with DeepfakeClient(server.grpc_url) as c:
        row = c.score_video(b"\x00garbage" * 1000, name="upload.mp4")
        assert row["label"] is None and row["error"]["type"] == "VideoError"
        assert "upload.mp4" in row["error"]["message"] and "not a readable video" in row["error"]["message"]
        assert c.is_ready()
        ok = c.score_video(videos["hevc"]["path"], sample="every:5")
        assert ok["error"] is None and ok["label"] in ("FAKE", "REAL")
        with pytest.raises(ServerError, match="face_prep|deepfake_frames"):
            c.infer_frames(np.zeros((2, 0, 4, 3), np.uint8))  # frames of height 0: the failing model is named
        assert c.is_ready()


def test_eight_concurrent_clients_ten_videos_each(server, runtime, videos):
    pool = [videos[k]["path"] for k in ("face", "hevc", "precropped", "noface")]
    opts = dict(sample=parse_policy("every:4"))
    want = _embedded(runtime, pool, **opts)
    results, errors = {}, []

    def client(k):
        try:
            with DeepfakeClient(server.grpc_url) as c:
                from dfserve.client.remote import RemoteScorer  # noqa: F401  (same import path as the CLI)
                from dfserve.pipeline.decode import DecodeStats, iter_frames, probe

                for n in range(10):
                    p = pool[(k + n) % len(pool)]
                    info = probe(p)
                    chunks = ((idx, np.stack(fr)) for idx, fr in
                              iter_frames(p, opts["sample"], info, DecodeStats(), chunk=4))
                    results[(k, n)] = (p, c.score_frames(chunks))
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    assert len(results) == 80
    for p, got in results.values():
        w = want[p]
        assert got["label"] == w["label"]
        if w["p_fake"] is not None:
            assert abs(got["p_fake"] - w["p_fake"]) <= 1e-4 and got["frames_scored"] == w["frames_scored"]


def test_score_cli_with_server_and_resume(server, runtime, videos, tmp_path):
    import glob

    shm_before = set(glob.glob("/dev/shm/dfserve-*"))
    out = tmp_path / "rows.jsonl"
    paths = [videos["face"]["path"], videos["corrupt"]["path"]]
    args = [sys.executable, "-m", "dfserve.cli", "score", *paths, "--server", server.grpc_url, "--out", str(out),
            "--sample", "every:5", "--no-progress", "--resume"]
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert {x["path"] for x in rows} == set(paths)
    e = _embedded(runtime, [paths[0]], sample=parse_policy("every:5"))[paths[0]]
    got = next(x for x in rows if x["path"] == paths[0])
    assert abs(got["p_fake"] - e["p_fake"]) <= 1e-4
    args.insert(5, videos["hevc"]["path"])
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0
    assert len(out.read_text().splitlines()) == 3  # only the new video was added
    assert set(glob.glob("/dev/shm/dfserve-*")) == shm_before  # frames went through shared memory, released


def test_a_model_that_fails_to_load_is_named(exported, tmp_path):
    repo = build_repo(tmp_path / "broken repo", "cpu", exported.out_dir)
    (repo / "frame_classifier" / "1" / "model.onnx").write_bytes(b"not onnx")
    srv = TritonServer(repo, startup_timeout=90)
    with pytest.raises(ServerError, match="frame_classifier"):
        srv.start()
    assert srv.proc is None


def test_idle_sequences_time_out_and_free_their_state(exported, tmp_path):
    import re
    import time

    repo = build_repo(tmp_path / "repo", "cpu", exported.out_dir)
    cfg = repo / "video_aggregator" / "config.pbtxt"
    cfg.write_text(re.sub(r"max_sequence_idle_microseconds: \d+", "max_sequence_idle_microseconds: 1000000",
                          cfg.read_text()))
    with TritonServer(repo) as srv, DeepfakeClient(srv.grpc_url) as c:
        logits = np.array([[0.5, -0.5], [1.0, 0.0]], np.float32)
        r = c.aggregate(11, logits, [0, 1], start=True)
        assert r["frames_scored"] == 2
        r = c.aggregate(11, logits[:1], [2])  # same sequence, still open: state kept
        assert r["frames_scored"] == 3
        time.sleep(2.5)  # idle past 1 s: the sequence is dropped
        c.aggregate(12, logits, [0, 1], start=True, end=True)  # any later request purges idle state
        with pytest.raises(ServerError):
            c.aggregate(11, logits[:1], [3], end=True)  # the old sequence is gone
        r = c.aggregate(11, logits[:1], [0], start=True, end=True)  # a new one starts from zero
        assert r["frames_scored"] == 1


@pytest.mark.parametrize("name", ["ts_360_720", "ts_720_1080"])
def test_size_change_mid_stream_on_the_server_paths(server, runtime, switch_videos, name):
    """--server (ensemble + aggregator), deepfake_video (bytes in) and the client's score_frames all
    split where the size changes and give the embedded engine's verdict and boxes."""
    from dfserve.pipeline.decode import DecodeStats, iter_frames, probe

    p = switch_videos[name]["path"]
    e = _embedded(runtime, [p], timeline=True)[p]
    assert e["error"] is None
    r = next(RemoteScorer(server.grpc_url, ScoreOptions(timeline=True)).score([p]))
    with DeepfakeClient(server.grpc_url) as c:
        v = c.score_video(p, timeline=True)
        info = probe(p)
        chunks = iter_frames(p, parse_policy("all"), info, DecodeStats(), 16)  # chunks straddle the switch
        f = c.score_frames(chunks, timeline=True)
    for row in (r, v):
        assert row["error"] is None and row["frames_scored"] == e["frames_scored"] == switch_videos[name]["frames"]
        assert abs(row["p_fake"] - e["p_fake"]) <= 1e-4
        for a, b in zip(e["timeline"], row["timeline"]):
            assert a[0] == b[0] and abs(a[1] - b[1]) <= 1e-4 and np.allclose(a[2], b[2], atol=0.11)
    assert abs(f["p_fake"] - e["p_fake"]) <= 1e-4 and f["frames_scored"] == e["frames_scored"]


def test_every_face_through_the_server_matches_embedded(server, runtime, tmp_path):
    """--faces all on the server paths (deepfake_video, and --server which sends the file to it): the same
    tracks, per-track verdicts and video verdict as the embedded engine."""
    from dfserve import samples

    v = samples.make_multi_face_video(
        tmp_path / "two people.mp4", [{"who": "astronaut", "scale": 0.6, "start": (10, 0), "end": (470, 10)},
                                      {"who": "cameraman", "scale": 0.6, "start": (490, 190), "end": (20, 180)}],
        n_frames=30)
    p = v["path"]
    e = _embedded(runtime, [p], faces="all", timeline=True)[p]
    r = next(RemoteScorer(server.grpc_url, ScoreOptions(faces="all", timeline=True)).score([p]))
    assert e["error"] is None and len([f for f in e["faces"] if f["decisive"]]) == 2
    assert r["error"] is None and r["decided_by"] == e["decided_by"] and r["path"] == p
    assert abs(r["p_fake"] - e["p_fake"]) <= 1e-4
    for a, b in zip(e["faces"], r["faces"]):
        assert a["track"] == b["track"] and a["frames"] == b["frames"] and abs(a["p_fake"] - b["p_fake"]) <= 1e-4
    assert [t[3] for t in e["timeline"]] == [t[3] for t in r["timeline"]]


def _same_evidence(e: dict, r: dict) -> None:
    """The server's evidence (crops and heat by its frame_classifier through BLS) equals the embedded engine's."""
    assert r["error"] is None and len(r["evidence"]) == len(e["evidence"]) > 0 and r["segments"] == e["segments"]
    for a, b in zip(e["evidence"], r["evidence"]):
        assert a["frame"] == b["frame"] and a["time_s"] == b["time_s"] and a["box"] == b["box"]
        assert abs(a["p_fake"] - b["p_fake"]) <= 1e-4
        assert b["png_base64"] == a["png_base64"]  # the very crop the classifier saw, PNG bytes alike
        heat = np.array(b["heat"])
        assert heat.shape == (spec_models.HEAT_GRID, spec_models.HEAT_GRID) and np.abs(heat).max() > 0
        assert np.allclose(heat, a["heat"], atol=2e-3)


def test_explain_through_the_server_matches_embedded(server, runtime, videos, tmp_path):
    """--explain on the server paths: deepfake_video computes the evidence (crops, heat through its
    frame_classifier by BLS, segments) as the embedded engine does; `dfserve score --server --explain` sends the
    file there and writes the crops beside --out."""
    p = videos["face"]["path"]
    kw = dict(sample=parse_policy("every:5"), explain=3, timeline=True)
    e = _embedded(runtime, [p], **kw)[p]
    with DeepfakeClient(server.grpc_url) as c:
        row = c.score_video(p, sample="every:5", timeline=True, explain=3)
    assert row["path"] == p and abs(row["p_fake"] - e["p_fake"]) <= 1e-4
    assert row["frames_scored"] == e["frames_scored"]
    _same_evidence(e, row)
    r = next(RemoteScorer(server.grpc_url, ScoreOptions(**kw)).score([p]))
    _same_evidence(e, r)
    # no face: an empty evidence and why
    with DeepfakeClient(server.grpc_url) as c:
        nf = c.score_video(videos["noface"]["path"], explain=2)
    assert nf["evidence"] == [] and "no face" in nf["evidence_note"]
    # the command line: PNG files beside --out
    out = tmp_path / "rows.jsonl"
    args = [sys.executable, "-m", "dfserve.cli", "score", p, "--server", server.grpc_url, "--out", str(out),
            "--sample", "every:5", "--explain", "2", "--no-progress"]
    res = subprocess.run(args, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    (got,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["frame"] for x in got["evidence"]] == [x["frame"] for x in e["evidence"][:2]]
    import base64

    for x, y in zip(got["evidence"], e["evidence"]):
        assert (out.parent / x["png"]).read_bytes() == base64.b64decode(y["png_base64"])


def test_deepfake_video_decodes_only_the_bytes_it_was_sent(server, tmp_path):
    """A concat list, a playlist or a URL sent as 'video' bytes never makes the server read its own files,
    and the error never echoes a server path."""
    import tempfile
    import uuid
    from pathlib import Path

    from dfserve import samples

    secret = Path(tempfile.gettempdir()) / f"dfserve-secret-{uuid.uuid4().hex[:8]}.ts"  # beside the server's temp files
    samples.make_face_video(secret, n_frames=10, width=160, height=96)
    try:
        attacks = {
            "list.mp4": f"ffconcat version 1.0\nfile {secret.name}\n",
            "play.m3u8": f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n{secret.name}\n#EXT-X-ENDLIST\n",
            "url.mp4": f"file://{secret}\n",
        }
        with DeepfakeClient(server.grpc_url) as c:
            for name, text in attacks.items():
                row = c.score_video(text.encode(), name=name)
                assert row["label"] is None and row["frames_decoded"] == 0, (name, row)
                assert row["error"]["type"] == "VideoError" and name in row["error"]["message"]
                assert tempfile.gettempdir() not in row["error"]["message"] and secret.name not in row["error"]["message"]
            assert c.is_ready()
    finally:
        secret.unlink()


def test_bad_tensors_are_refused_by_the_python_models(server):
    """NaN logits, mismatched lengths, detections that do not match the frames: a clear error naming the
    model, never a silently wrong verdict; the server stays ready."""
    from dfserve.serving.triton_models import check_chunk

    with pytest.raises(ValueError, match="NaN"):
        check_chunk(np.array([[np.nan, 1.0]]), np.array([0]))
    with pytest.raises(ValueError, match="2 frames of logits but 1 indices"):
        check_chunk(np.zeros((2, 2)), np.array([0]))
    with DeepfakeClient(server.grpc_url) as c:
        with pytest.raises(ServerError, match="video_aggregator.*NaN"):
            c.aggregate(7, np.array([[np.nan, 0.0]], np.float32), [0], start=True, end=True)
        with pytest.raises(ServerError, match="video_aggregator.*indices"):
            c.aggregate(8, np.zeros((3, 2), np.float32), [0, 1], start=True, end=True)
        frames = np.zeros((2, 64, 64, 3), np.uint8)
        with pytest.raises(ServerError, match="face_crop"):
            c._infer(spec_models.FACE_CROP, {"frames": frames, "loc": np.zeros((1, 5, 4), np.float32),
                                             "scores": np.zeros((1, 5), np.float32),
                                             "scale": np.ones((1, 1), np.float32),
                                             "landmarks": np.zeros((1, 5, 10), np.float32)})
        assert c.is_ready()


def test_shared_memory_of_a_killed_client_is_released(server, videos):
    """A client killed with -9 leaves its /dev/shm region registered; the server's sweep releases it."""
    import os
    import signal
    import time

    code = ("import sys, time, numpy as np\n"
            "from dfserve.client import DeepfakeClient\n"
            "c = DeepfakeClient(sys.argv[1])\n"
            "c.infer_frames(np.zeros((8, 360, 640, 3), np.uint8))\n"  # 5.5 MB: through shared memory
            "print(c._shm[0], flush=True)\n"
            "time.sleep(600)\n")
    p = subprocess.Popen([sys.executable, "-c", code, server.grpc_url], stdout=subprocess.PIPE, text=True)
    name = p.stdout.readline().strip()
    assert name.startswith(f"dfserve-{p.pid}-") and os.path.exists(f"/dev/shm/{name}")
    with DeepfakeClient(server.grpc_url) as c:
        assert name in [r.name for r in c._c.get_system_shared_memory_status().regions.values()]
        p.send_signal(signal.SIGKILL)
        p.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and os.path.exists(f"/dev/shm/{name}"):
            time.sleep(0.5)
        assert not os.path.exists(f"/dev/shm/{name}")
        assert name not in [r.name for r in c._c.get_system_shared_memory_status().regions.values()]
        assert c.is_ready()
