"""`dfserve web` as clients use it: a real uvicorn server on a loopback port, real uploads over HTTP."""
from __future__ import annotations

import concurrent.futures as cf
import os
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("python_multipart")
httpx = pytest.importorskip("httpx")

from webserver import WebServer, wait_job  # noqa: E402

pytestmark = pytest.mark.web


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Small generated videos (320x180) in a folder with a space in its name."""
    from dfserve import samples

    d = tmp_path_factory.mktemp("web clips") / "with space"
    d.mkdir()
    v = {
        "face": samples.make_face_video(d / "face clip.mp4", n_frames=24, width=320, height=180)["path"],
        "long": samples.make_face_video(d / "long.mp4", n_frames=240, width=320, height=180, seed=3)["path"],
        "noface": samples.make_noface_video(d / "noface.mp4", n_frames=10, width=320, height=180)["path"],
        "corrupt": samples.make_corrupt_file(d / "corrupt.mp4")["path"],
    }
    (d / "notes.mov").write_text("this is not a video\n")
    v["text"] = str(d / "notes.mov")
    (d / "big.mp4").write_bytes(os.urandom(int(1.5 * 2**20)))  # over the 1 MB limit of the main server
    v["big"] = str(d / "big.mp4")
    return v


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):
    # limits (issue 25): the flags, and one through the environment; the clips below are far under them
    os.environ["DFSERVE_MAX_TOTAL_PIXELS"] = "100000000"  # 48 frames of 1080p
    try:
        srv = WebServer(exported.out_dir, tmp_path_factory.mktemp("web data") / "data dir", "--max-upload-mb", 1,
                        "--workers", 2, "--queue", 32, "--max-frames", 600).start()
    finally:
        del os.environ["DFSERVE_MAX_TOTAL_PIXELS"]
    yield srv
    assert srv.stop(), srv.log_tail()


@pytest.fixture(scope="module")
def client(server):
    with server.client() as c:
        yield c


def submit(client, path, name=None, **fields):
    with open(path, "rb") as fh:
        return client.post("/v1/jobs", files={"file": (name or Path(path).name, fh, "video/mp4")},
                           data={k: str(v) for k, v in fields.items()})


def uploads(server) -> list:
    return sorted(p.name for p in (server.data_dir / "uploads").iterdir())


# ------------------------------------------------------------------------------------------ pure
def test_display_names_never_paths():
    from dfserve.web.uploads import display_name, server_suffix, sniff_not_video

    assert display_name("../../etc/passwd") == "passwd"
    assert display_name("..\\..\\boot.ini") == "boot.ini"
    assert display_name("a\x00b\n.mp4") == "ab.mp4"
    assert display_name("..") == "upload" and display_name("") == "upload" and display_name(None) == "upload"
    long = display_name("x" * 5000 + ".mp4")
    assert len(long) <= 200 and long.endswith(".mp4")
    assert server_suffix("clip.MKV") == ".mkv" and server_suffix("passwd") == ".upload"
    assert server_suffix("x.sh") == ".upload"
    assert sniff_not_video(b"hello world\n") == "a text file"
    assert sniff_not_video(b"\x89PNG\r\n\x1a\n....") == "a PNG image"
    assert sniff_not_video(b"\x00\x00\x00\x20ftypisom") is None  # mp4
    assert sniff_not_video(b"\x1aE\xdf\xa3") is None  # matroska


def test_options_from_form():
    from dfserve.errors import UsageError
    from dfserve.pipeline.options import ScoreOptions
    from dfserve.web.app import options_from_form

    base = ScoreOptions()
    o = options_from_form({"sample": "fps:5", "head": "last", "timeline": "false", "chunk": "8"}, base)
    assert str(o.sample) == "fps:5" and o.head == "last" and o.timeline is False and o.chunk == 8
    assert options_from_form({}, base).timeline is True  # the web default: the page draws it
    assert options_from_form({"options": '{"no_face": "frame"}'}, base).no_face == "frame"
    for bad in ({"faces": "bogus"}, {"colour": "red"}, {"batch": "4"}, {"timeline": "maybe"}, {"sample": "x:1"}):
        with pytest.raises(UsageError):
            options_from_form(bad, base)


def test_store_requeues_running_jobs_and_gives_up_on_poison(tmp_path):
    from dfserve.web.store import JobStore

    st = JobStore(tmp_path / "jobs.sqlite3")
    for jid in ("a", "b", "c"):
        st.add(jid, f"{jid}.mp4", f"{jid}.mp4", 10, "{}")
    st.mark_running("a")
    st.finish("a", "done", {"label": "REAL"}, None, [])
    st.mark_running("b")
    st.close()
    st = JobStore(tmp_path / "jobs.sqlite3")  # "restart"
    assert st.requeue_running() == ["b", "c"] and st.get("a")["result"] == {"label": "REAL"}
    for _ in range(2):  # b dies with the server twice more
        st.mark_running("b")
        st.requeue_running()
    st.mark_running("b")
    assert st.requeue_running() == ["c"]
    assert st.get("b")["status"] == "failed" and st.get("b")["error"]["type"] == "InternalError"


def test_queue_bound_and_cancel_frees_a_slot(tmp_path):
    from dfserve.pipeline.options import ScoreOptions
    from dfserve.scoring import ScorerConfig
    from dfserve.web.runner import Runner
    from dfserve.web.store import JobStore

    r = Runner(JobStore(tmp_path / "j.sqlite3"), tmp_path, tmp_path, ScorerConfig(), ScoreOptions(), queue_size=2)
    assert r.try_reserve() and r.try_reserve() and not r.try_reserve()
    r.enqueue("a")
    r.enqueue("b")
    r.cancel_queued("a")
    r.cancel_queued("a")  # twice: still one slot
    assert r.queued == 1 and r.try_reserve() and not r.try_reserve()
    assert r._popped("a") is False and r._popped("b") is True and r.queued == 1


def test_progress_hook_prefers_the_scorers_own_callback():
    from dfserve.web.runner import attach_progress

    seen = []

    class WithHook:
        on_progress = None

    s = WithHook()
    detach = attach_progress(s, lambda path, done: seen.append((path, done)))
    s.on_progress("v.mp4", 16, 40)
    detach()
    assert seen == [("v.mp4", 16)] and s.on_progress is None

    class WithFrames:
        @staticmethod
        def iter_frames(path, *a, **kw):
            yield [0, 1], ["f0", "f1"]
            yield [2], ["f2"]

    s = WithFrames()
    detach = attach_progress(s, lambda path, done: seen.append((path, done)))
    assert [idx for idx, _ in s.iter_frames("w.mp4")] == [[0, 1], [2]]
    detach()
    assert seen[1:] == [("w.mp4", 2), ("w.mp4", 3)] and "iter_frames" not in s.__dict__


def test_import_direction_and_lazy_fastapi():
    import subprocess
    import sys

    root = Path(__file__).parent.parent / "dfserve"
    for sub in ("pipeline", "export", "serving", "client"):
        for f in (root / sub).rglob("*.py"):
            text = f.read_text()
            assert "dfserve.web" not in text and "from ..web" not in text and "from .web" not in text, f
    code = ("import sys; from dfserve.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'torch') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr)


# ------------------------------------------------------------------------------------- server
def test_health_page_and_openapi(server, client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["ready"] is True
    page = client.get("/")
    assert page.status_code == 200 and "dfserve" in page.text and 'type="file"' in page.text
    assert client.get("/static/app.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/timeline", "/healthz", "/readyz"):
        assert p in paths


def test_good_video_matches_dfserve_score(server, client, clips, exported):
    from dfserve.pipeline.options import ScoreOptions
    from dfserve.scoring import ScorerConfig, make_scorer

    r = submit(client, clips["face"], sample="every:2", head="mean")
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert r.headers["location"] == f"/v1/jobs/{job_id}" and len(job_id) >= 20
    job = wait_job(client, job_id)
    assert job["status"] == "done", job
    res = job["result"]
    assert res["runtime"] == "onnxruntime"  # the web server scores lean (issue 25): `dfserve score --runtime onnxruntime`
    direct = next(make_scorer(ScoreOptions(sample="every:2", timeline=True),
                              ScorerConfig(models=exported.out_dir, runtime="onnxruntime")).score([clips["face"]]))
    assert res["p_fake"] == direct["p_fake"] and res["label"] == direct["label"]
    assert res["confidence"] == direct["confidence"] and res["frames_scored"] == direct["frames_scored"] == 12
    assert res["path"] == "face clip.mp4" and str(server.data_dir) not in str(job)
    assert job["options"]["sample"] == "every:2" and job["progress"] == {"frames_done": 12, "frames_expected": 12}
    tl = client.get(f"/v1/jobs/{job_id}/timeline").json()
    assert tl["timeline"] == direct["timeline"]
    assert 1 <= len(job["thumbnails"]) <= 8
    img = client.get(job["thumbnails"][0]["url"])
    assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg" and img.content[:3] == b"\xff\xd8\xff"
    listed = client.get("/v1/jobs").json()["jobs"]
    assert job_id in [j["id"] for j in listed]


def test_explain_per_request_gives_evidence_and_segments(client, clips):
    """explain=N per request (issue 24): the result carries the evidence frames (crop as base64 PNG, 14x14 heat)."""
    import base64

    r = submit(client, clips["face"], sample="first:1", explain=1)
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"])
    assert job["status"] == "done" and job["options"]["explain"] == 1, job
    (e,) = job["result"]["evidence"]
    assert e["frame"] == 0 and e["p_fake"] == job["result"]["p_fake"]
    assert base64.b64decode(e["png_base64"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(e["heat"]) == 14 and all(len(row) == 14 for row in e["heat"])
    assert isinstance(job["result"]["segments"], list)
    bad = submit(client, clips["face"], explain=1000)
    assert bad.status_code == 422 and "explain" in bad.json()["error"]["message"]


def test_noface_and_corrupt_fail_with_score_error_types(client, clips):
    ids = {k: submit(client, clips[k]).json()["id"] for k in ("noface", "corrupt")}
    noface, corrupt = (wait_job(client, ids[k]) for k in ("noface", "corrupt"))
    assert noface["status"] == "failed" and noface["error"]["type"] == "NoFaceError"
    assert noface["result"]["label"] is None and "noface.mp4" in noface["error"]["message"]
    assert corrupt["status"] == "failed" and corrupt["error"]["type"] == "VideoError"
    tl = client.get(f"/v1/jobs/{ids['noface']}/timeline").json()["timeline"]
    assert len(tl) == 10 and all(p is None and box is None for _, p, box in tl)  # every frame: no face
    assert client.get(f"/v1/jobs/{ids['corrupt']}/timeline").status_code == 404


def test_refused_before_decoding(server, client, clips, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    r = submit(client, empty)
    assert r.status_code == 422 and r.json()["error"]["type"] == "VideoError" and "empty" in r.json()["error"]["message"]
    r = submit(client, clips["text"])
    assert r.status_code == 415 and "not a video" in r.json()["error"]["message"]
    r = submit(client, clips["face"], faces="bogus")
    assert r.status_code == 422 and "faces" in r.json()["error"]["message"]
    r = submit(client, clips["face"], colour="red")
    assert r.status_code == 422 and "colour" in r.json()["error"]["message"]
    r = client.post("/v1/jobs", data={"sample": "all"})
    assert r.status_code in (415, 422)
    assert not [n for n in uploads(server) if n.endswith(".part")]


def test_too_large_is_413(server, client, clips, tmp_path):
    before = uploads(server)
    r = submit(client, clips["big"])  # 1.5 MB: refused while streaming
    assert r.status_code == 413 and r.json()["error"]["type"] == "UploadTooLarge"
    assert r.json()["error"]["limit"] == "max_upload_bytes" and "1048576 bytes" in r.json()["error"]["message"]
    huge = tmp_path / "huge.mp4"
    huge.write_bytes(os.urandom(3 * 2**20))  # 3 MB: refused on Content-Length
    r = submit(client, huge)
    assert r.status_code == 413
    assert uploads(server) == before


def test_over_limit_uploads_are_refused_by_name_and_the_worker_goes_on(server, client, tmp_path):
    """Issue 25, real over-limit files: what the header shows (an 8K frame, 1200 declared frames at 1 fps) is a 422
    naming the limit before any decoding; a decode bomb (17 kB, 622 M pixels, no declared frame count) is a failed
    job naming max_total_pixels, stopped after 49 frames; the next upload is scored (worker free, server up)."""
    from dfserve import samples

    assert client.get("/v1/config").json()["limits"] == {
        "max_frames": 600, "max_pixels": 3840 * 2160, "max_total_pixels": 100_000_000, "max_cpu_s": 600,
        "max_wall_s": 1800, "max_upload_bytes": 2**20}
    before = uploads(server)
    for make, name, limit in ((samples.make_8k_frame_video, "eight k.mp4", "max_pixels"),
                              (samples.make_long_low_fps_video, "twenty minutes.mp4", "max_frames")):
        r = submit(client, make(tmp_path / name)["path"])
        err = r.json()["error"]
        assert r.status_code == 422 and err["type"] == "RequestLimitError" and err["limit"] == limit, r.text
        assert err["message"].startswith(f"{name}: over the limit") and str(tmp_path) not in err["message"]
    assert uploads(server) == before  # nothing kept, nothing queued
    r = submit(client, samples.make_decode_bomb(tmp_path / "bomb.mkv")["path"])
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"])
    assert job["status"] == "failed" and job["error"]["type"] == "RequestLimitError", job
    assert job["error"]["limit"] == "max_total_pixels" and job["error"]["message"].startswith("bomb.mkv: ")
    assert 48 <= job["result"]["frames_decoded"] <= 50
    r = submit(client, samples.make_face_video(tmp_path / "after.mp4", n_frames=8, width=320, height=180)["path"])
    assert wait_job(client, r.json()["id"])["status"] == "done"
    assert client.get("/readyz").json()["ready"]


def test_a_lean_scorer_releases_its_memory_and_shares_its_runtime(exported, clips):
    """Issue 25 (web memory): `dfserve web` scores lean: onnxruntime with memory patterns off (OpenVINO keeps each
    shape's memory for good), its arenas shrinkable when idle; a scorer for other options reuses the runtime."""
    from dfserve.pipeline.options import ScoreOptions
    from dfserve.scoring import ScorerConfig, make_scorer

    config = ScorerConfig(models=exported.out_dir, lean=True)
    home = make_scorer(ScoreOptions(), config)
    assert home.rt.name == "onnxruntime"
    assert not home.rt._cls.get_session_options().enable_mem_pattern
    other = make_scorer(ScoreOptions(timeline=True, sample="every:2"), config, share_with=home)
    assert other.rt is home.rt and next(other.score([clips["face"]]))["error"] is None
    home.rt.release()  # the idle hook: shrinks both arenas
    assert make_scorer(ScoreOptions(batch=8), config, share_with=home).rt is not home.rt  # another batch: its own


def test_one_copy_of_the_models_per_worker_whatever_the_options(client, clips):
    """Issue 25 (web memory): jobs with several option sets are scored by scorers that share their worker's
    runtime: the server holds one copy of the models per worker (2 here), not one per option set."""
    ids = [submit(client, clips["face"], name=f"opts {k}.mp4", **o).json()["id"]
           for k, o in enumerate(({"sample": "every:2"}, {"head": "last", "timeline": "false"}, {"sample": "first:5"},
                                  {"colors": "stream"}))]
    assert {wait_job(client, i)["status"] for i in ids} == {"done"}
    assert client.get("/readyz").json()["models_loaded"] == 2


def test_concurrent_uploads(client, clips):
    def one(k):
        with httpx.Client(base_url=str(client.base_url), timeout=60) as c:
            r = submit(c, clips["face"], name=f"copy {k}.mp4", sample="every:3")
            assert r.status_code == 202, r.text
            return wait_job(c, r.json()["id"])

    with cf.ThreadPoolExecutor(4) as ex:
        jobs = list(ex.map(one, range(4)))
    assert {j["status"] for j in jobs} == {"done"}
    assert len({j["result"]["p_fake"] for j in jobs}) == 1
    assert len({j["id"] for j in jobs}) == 4


def test_delete_removes_job_and_files(server, client, clips):
    job_id = submit(client, clips["face"], sample="every:4").json()["id"]
    job = wait_job(client, job_id)
    assert [n for n in uploads(server) if n.startswith(job_id)]
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 404
    assert not [n for n in uploads(server) if n.startswith(job_id)]
    assert not list((server.data_dir / "thumbs").glob(f"{job_id}-*")) and job["thumbnails"]
    assert client.get("/v1/jobs/not-a-job").status_code == 404


def _raw_multipart(filename: bytes, payload: bytes):
    b = b"----dfserve-test-boundary"
    body = (b"--" + b + b"\r\nContent-Disposition: form-data; name=\"sample\"\r\n\r\nevery:6\r\n"
            b"--" + b + b"\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + filename + b"\"\r\n"
            b"Content-Type: video/mp4\r\n\r\n" + payload + b"\r\n--" + b + b"--\r\n")
    return body, {"Content-Type": "multipart/form-data; boundary=" + b.decode()}


def test_hostile_filenames_never_become_paths(server, client, clips, tmp_path):
    payload = Path(clips["face"]).read_bytes()
    names = [b"../../etc/passwd", b"..%2f..%2fx.mp4", b"a\x00b.mp4", b"/abs/olute.mp4", b"C:\\\\win\\\\x.mkv",
             b"n" * 3000 + b".mp4", "caf\u00e9 \u202e4pm.exe".encode()]
    ids = []
    for raw in names:
        body, headers = _raw_multipart(raw, payload)
        r = client.post("/v1/jobs", content=body, headers=headers)
        assert r.status_code == 202, (raw[:40], r.text)
        job = r.json()
        ids.append(job["id"])
        shown = job["filename"]
        assert "/" not in shown and "\\" not in shown and "\x00" not in shown and "\u202e" not in shown
        assert 0 < len(shown) <= 200
    for job_id in ids:
        assert wait_job(client, job_id)["status"] == "done"
    for name in uploads(server):  # only server-made names: <job id><known video suffix or .upload>
        assert name.split(".")[0] in {j["id"] for j in client.get("/v1/jobs?limit=200").json()["jobs"]}
    assert not (server.data_dir / "passwd").exists() and not (server.data_dir.parent / "etc").exists()
    assert not list(server.data_dir.rglob("*passwd*")) and not list(server.data_dir.rglob("olute*"))


def test_token_required_when_set(exported, tmp_path, clips):
    srv = WebServer(exported.out_dir, tmp_path / "data", token="s3cret-token").start()
    try:
        with srv.client() as anon, srv.client(token="s3cret-token") as ok, srv.client(token="wrong") as bad:
            for c, want in ((anon, 401), (bad, 401)):
                r = submit(c, clips["face"])
                assert r.status_code == want and r.headers.get("www-authenticate") == "Bearer"
                assert c.get("/v1/jobs").status_code == want
                assert c.get("/v1/config").status_code == want
            assert anon.get("/healthz").status_code == 200 and anon.get("/").status_code == 200
            r = submit(ok, clips["face"], sample="every:6")
            assert r.status_code == 202
            assert anon.get(r.headers["location"]).status_code == 401
            assert wait_job(ok, r.json()["id"])["status"] == "done"
        assert not [n for n in os.listdir(srv.data_dir / "uploads") if n.endswith(".part")]
    finally:
        assert srv.stop()


def test_queue_full_503_then_retention(exported, tmp_path, clips):
    srv = WebServer(exported.out_dir, tmp_path / "data", "--workers", 1, "--queue", 1, "--retention", "3s").start()
    try:
        with srv.client() as c:
            codes, ids, retry = [], [], None
            for _ in range(4):
                r = submit(c, clips["long"], sample="all")
                codes.append(r.status_code)
                if r.status_code == 202:
                    ids.append(r.json()["id"])
                else:
                    assert r.status_code == 503 and r.json()["error"]["type"] == "QueueFull"
                    retry = r.headers["retry-after"]
            assert 503 in codes and codes[0] == 202 and int(retry) >= 1, codes
            assert not [n for n in os.listdir(srv.data_dir / "uploads") if n.endswith(".part")]
            for job_id in ids:
                assert wait_job(c, job_id, timeout=300)["status"] == "done"
            # retention 3 s: finished jobs and their files go away by themselves
            deadline = time.time() + 30
            while time.time() < deadline and any(c.get(f"/v1/jobs/{i}").status_code == 200 for i in ids):
                time.sleep(0.5)
            assert all(c.get(f"/v1/jobs/{i}").status_code == 404 for i in ids)
            assert os.listdir(srv.data_dir / "uploads") == [] and os.listdir(srv.data_dir / "thumbs") == []
    finally:
        assert srv.stop()


def test_restart_requeues_running_job_and_keeps_results(exported, tmp_path, clips):
    data = tmp_path / "data"
    srv = WebServer(exported.out_dir, data, "--workers", 1).start()
    with srv.client() as c:
        finished_id = submit(c, clips["face"], sample="every:3").json()["id"]
        finished = wait_job(c, finished_id)
        long_id = submit(c, clips["long"], sample="all").json()["id"]
        job = wait_job(c, long_id, until=("running",))
        deadline = time.time() + 120
        while time.time() < deadline and not job["progress"]["frames_done"]:
            time.sleep(0.1)
            job = c.get(f"/v1/jobs/{long_id}").json()
        assert job["status"] == "running" and job["progress"]["frames_expected"] == 240, job
        assert 0 < job["progress"]["frames_done"] <= 240
    srv.kill9()  # mid-job, no chance to clean up
    srv2 = WebServer(exported.out_dir, data, "--workers", 1, port=srv.port).start()
    try:
        with srv2.client() as c:
            again = wait_job(c, long_id, timeout=300)
            assert again["status"] == "done" and again["result"]["frames_scored"] == 240
            kept = c.get(f"/v1/jobs/{finished_id}").json()
            assert kept["result"] == finished["result"] and kept["status"] == "done"
            assert c.get(f"/v1/jobs/{finished_id}/thumbnails/0.jpg").status_code == 200
    finally:
        assert srv2.stop()
