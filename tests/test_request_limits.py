"""Per-request limits (issue 16): the spec's names and defaults, the frame guard, and decoding under it."""
import numpy as np
import pytest

from dfserve import samples, spec
from dfserve.errors import MAX_MESSAGE_CHARS, RequestLimitError, UsageError, cut
from dfserve.pipeline.decode import DecodeStats, iter_frames, probe
from dfserve.pipeline.limits import RequestLimits
from dfserve.pipeline.sampling import parse_policy


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """30 frames of 160x96."""
    return samples.make_face_video(tmp_path_factory.mktemp("limits") / "clip.mp4", n_frames=30, width=160, height=96)


def test_the_spec_is_the_one_source_of_names_and_defaults():
    names = ["max_frames", "max_pixels", "max_total_pixels", "max_cpu_s", "max_wall_s", "max_upload_bytes"]
    assert [lim.param for lim in spec.REQUEST_LIMITS] == names
    assert [lim.flag for lim in spec.REQUEST_LIMITS] == ["--" + n.replace("_", "-") for n in names]
    assert [lim.env for lim in spec.REQUEST_LIMITS] == ["DFSERVE_" + n.upper() for n in names]
    assert RequestLimits().to_params() == {"max_frames": "36000", "max_pixels": "8294400",
                                           "max_total_pixels": "74649600000", "max_cpu_s": "600",
                                           "max_wall_s": "1800", "max_upload_bytes": "524288000"}
    assert dict(spec.DEEPFAKE_VIDEO.parameters) == RequestLimits().to_params()
    assert RequestLimits.from_params({}) == RequestLimits() == RequestLimits.defaults("server")
    assert not RequestLimits.local().active and RequestLimits().active  # one's own files: no limit by default


def test_limits_from_config_parameters():
    lim = RequestLimits.from_params({"max_frames": "100", "max_cpu_s": "2.5", "device": "cpu"})
    assert (lim.max_frames, lim.max_pixels, lim.max_cpu_s) == (100, 3840 * 2160, 2.5)
    assert RequestLimits.from_params({"max_frames": "100"}, RequestLimits.local()).to_params() == {
        **{k: "0" for k in RequestLimits().to_params()}, "max_frames": "100"}
    assert RequestLimits.from_params(lim.to_params()) == lim
    assert lim.to_params()["max_cpu_s"] == "2.5"
    for bad, match in (({"max_frames": "many"}, "max_frames must be a number"),
                       ({"max_pixels": "-1"}, "max_pixels .--max-pixels, DFSERVE_MAX_PIXELS. must be a number >= 0"),
                       ({"max_frames": "1.5"}, "max_frames .--max-frames, DFSERVE_MAX_FRAMES. must be a whole number"),
                       ({"max_cpu_s": "nan"}, "max_cpu_s"), ({"max_cpu_s": "inf"}, "max_cpu_s")):
        with pytest.raises(UsageError, match=match):
            RequestLimits.from_params(bad)


def test_the_guard_refuses_each_limit_by_name():
    clock = [10.0]
    guard = RequestLimits(max_frames=20, max_pixels=640 * 360, max_cpu_s=1.5).guard("my clip.mp4", lambda: clock[0])
    guard(20, 640, 360)  # at the limits: fine
    with pytest.raises(RequestLimitError, match=r"my clip.mp4: over the limit of 20 frames decoded per "
                                                r"request \(max_frames\)"):
        guard(21, 640, 360)
    with pytest.raises(RequestLimitError, match=r"my clip.mp4: .*limit of 230400 pixels per frame \(max_pixels\): "
                                                r"frame 4 is 641x360 = 230760 pixels"):
        guard(5, 641, 360)
    clock[0] = 11.6
    with pytest.raises(RequestLimitError, match=r"my clip.mp4: .*limit of 1.5 CPU seconds per request \(max_cpu_s\): "
                                                r"1.60 CPU seconds used after 3 frames"):
        guard(3, 64, 64)
    RequestLimits.local().guard("x", lambda: clock[0])(10 ** 9, 10 ** 5, 10 ** 5)


def test_limit_messages_are_short_and_printable():
    name = "a\nb" + "x" * 10_000 + ".mp4"
    with pytest.raises(RequestLimitError) as e:
        RequestLimits(max_frames=1).guard(name)(2, 8, 8)
    msg = str(e.value)
    assert len(msg) < 400 and "\n" not in msg and "max_frames" in msg and msg.startswith("a?b") and ".mp4:" in msg
    assert len(str(RequestLimitError("y" * 50_000))) == MAX_MESSAGE_CHARS
    assert cut("z" * 10) == "z" * 10
    long = "".join(str(i % 10) for i in range(5000))
    c = cut(long, 100)
    assert len(c) == 100 and c.startswith(long[:50]) and c.endswith(long[-30:]) and "[...]" in c


def test_decoding_checks_every_frame_not_only_the_sampled_ones(clip):
    seen = []
    info = probe(clip["path"])
    list(iter_frames(clip["path"], parse_policy("every:10"), info, DecodeStats(), guard=lambda *a: seen.append(a)))
    assert seen == [(n, 160, 96) for n in range(1, 31)]

    stats = DecodeStats()
    chunks = iter_frames(clip["path"], parse_policy("every:10"), probe(clip["path"]), stats,
                         guard=RequestLimits(max_frames=25).guard("clip.mp4"))
    with pytest.raises(RequestLimitError, match="clip.mp4: .*max_frames"):
        list(chunks)
    assert stats.frames_decoded == 26  # stopped at the first frame over the limit, 3 of them sampled
    assert len(list(iter_frames(clip["path"], parse_policy("all"), probe(clip["path"]), DecodeStats(),
                                guard=RequestLimits(max_frames=30).guard("clip.mp4")))) == 2  # 16 + 14 frames


def test_a_limit_refuses_the_request_rather_than_becoming_a_row(clip):
    """score_video_frames (the server's deepfake_video path) raises RequestLimitError with the client's
    name, never the server's temporary path; other failures are still rows."""
    from dfserve.pipeline.frames_scoring import FramesModels, score_video_frames
    from dfserve.pipeline.options import ScoreOptions

    def frames_fn(frames):
        n = len(frames)  # a face in every frame
        return np.tile(np.float32([10, 10, 60, 60]), (n, 1)), np.ones(n, bool), np.zeros((n, 2), np.float32)

    models = FramesModels(frames_fn=frames_fn)
    with pytest.raises(RequestLimitError) as e:
        score_video_frames(clip["path"], ScoreOptions(), models, "m", display_path="upload.mp4",
                           guard=RequestLimits(max_pixels=100 * 96).guard("upload.mp4"))
    assert "upload.mp4" in str(e.value) and clip["path"] not in str(e.value) and "max_pixels" in str(e.value)
    row = score_video_frames(clip["path"], ScoreOptions(), models, "m", display_path="upload.mp4",
                             guard=RequestLimits().guard("upload.mp4"))
    assert row["error"] is None and row["frames_decoded"] == 30


# ---------------------------------------------------------------------------------------- issue 25: one object
def test_resolve_flag_over_environment_over_file_over_default(tmp_path):
    js = tmp_path / "limits.json"
    js.write_text('{"limits": {"max_frames": 500, "max_wall_s": 30, "max_cpu_s": 9}}')
    toml = tmp_path / "limits.toml"
    toml.write_text("max_frames = 400\nmax_total_pixels = 1e9\n")
    env = {"DFSERVE_MAX_FRAMES": "300", "DFSERVE_MAX_CPU_S": "2.5", "DFSERVE_LIMITS_FILE": str(js)}
    lim = RequestLimits.resolve("server", {"max_frames": 200, "max_pixels": None}, env=env)
    assert (lim.max_frames, lim.max_cpu_s, lim.max_wall_s, lim.max_pixels) == (200, 2.5, 30, 3840 * 2160)
    assert RequestLimits.resolve("server", env=env).max_frames == 300
    local = RequestLimits.resolve("local", env={}, file=toml)  # --limits FILE; local defaults: off
    assert (local.max_frames, local.max_total_pixels, local.max_pixels, local.max_cpu_s) == (400, 10 ** 9, 0, 0)
    assert RequestLimits.resolve("local", env={}) == RequestLimits.local()
    bad = tmp_path / "bad.json"
    bad.write_text('{"max_frame": 5}')
    with pytest.raises(UsageError, match="unknown limit.*max_frame.*known: max_frames"):
        RequestLimits.resolve(env={}, file=bad)
    with pytest.raises(UsageError, match="DFSERVE_MAX_WALL_S.*must be a number"):
        RequestLimits.resolve(env={"DFSERVE_MAX_WALL_S": "soon"})


def test_the_guard_counts_total_pixels_and_wall_seconds():
    wall = [0.0]
    guard = RequestLimits(max_total_pixels=1000, max_wall_s=5).guard("bomb.mkv", lambda: 0.0, lambda: wall[0])
    guard(1, 20, 20)  # 400
    guard(2, 20, 20)  # 800
    with pytest.raises(RequestLimitError, match=r"bomb.mkv: .*1000 decoded pixels per request \(max_total_pixels\): "
                                                r"1200 pixels decoded after 3 frames") as e:
        guard(3, 20, 20)
    assert e.value.limit == "max_total_pixels"
    skipping = RequestLimits(max_total_pixels=1000).guard("seek.mp4")
    with pytest.raises(RequestLimitError, match="1200 pixels decoded after 3 frames"):
        skipping(3, 20, 20)  # a decoder that skipped ahead: the frames it passed count
    slow = RequestLimits(max_wall_s=5).guard("slow.mp4", lambda: 0.0, lambda: wall[0])  # wall clock starts at 0
    wall[0] = 5.5
    with pytest.raises(RequestLimitError, match=r"5 wall-clock seconds per request \(max_wall_s\): 5.50 s elapsed"):
        slow(1, 8, 8)
    with pytest.raises(RequestLimitError, match=r"over the limit of 100 bytes per uploaded file \(max_upload_bytes\)"):
        RequestLimits(max_upload_bytes=100).check_upload(101, "big.mp4")
    RequestLimits(max_upload_bytes=100).check_upload(100, "ok.mp4")


def test_a_limit_error_pickles_with_its_name():
    import pickle

    e = pickle.loads(pickle.dumps(RequestLimitError("x: over", limit="max_frames")))
    assert e.limit == "max_frames" and str(e) == "x: over"


@pytest.fixture(scope="module")
def over_limit_files(tmp_path_factory):
    """Real over-limit files: 20 minutes at 1 fps, one 8K frame, a 17 kB decode bomb (622 M pixels), and a
    good face clip, in a folder with a space in its name."""
    d = tmp_path_factory.mktemp("over limits") / "with space"
    d.mkdir()
    return {
        "long": samples.make_long_low_fps_video(d / "twenty minutes.mp4"),
        "8k": samples.make_8k_frame_video(d / "eight k.mp4"),
        "bomb": samples.make_decode_bomb(d / "bomb.mkv"),
        "face": samples.make_face_video(d / "face.mp4", n_frames=12, width=320, height=180),
        "dir": d,
    }


def test_dfserve_score_rows_name_the_limit_and_the_batch_goes_on(exported, over_limit_files, tmp_path, monkeypatch):
    """`dfserve score` with limits set (flags and DFSERVE_MAX_*): each over-limit file is one row whose error names
    the limit, decoding stopped early; the good clip in the same batch is scored. Without limits (the local
    default), the 20-minute video is scored, not refused by surprise."""
    from dfserve.cli import main
    from dfserve.pipeline.results import load_rows

    f = over_limit_files
    monkeypatch.setenv("DFSERVE_MAX_TOTAL_PIXELS", "100000000")  # 48 frames of 1080p
    out = tmp_path / "rows.jsonl"
    assert main(["score", str(f["dir"]), "--models", str(exported.out_dir), "--out", str(out), "--no-progress",
                 "--no-summary", "--max-frames", "600", "--max-pixels", str(3840 * 2160)]) == 0
    rows = {r["path"]: r for r in load_rows(out)}
    assert len(rows) == 4
    errors = {k: rows[f[k]["path"]]["error"] for k in ("long", "8k", "bomb", "face")}
    assert errors["face"] is None and rows[f["face"]["path"]]["label"] in ("FAKE", "REAL")
    for k, limit in (("long", "max_frames"), ("8k", "max_pixels"), ("bomb", "max_total_pixels")):
        assert errors[k]["type"] == "RequestLimitError" and errors[k]["limit"] == limit, errors[k]
        assert f"({limit})" in errors[k]["message"] and f[k]["path"] in errors[k]["message"]
    assert rows[f["long"]["path"]]["frames_decoded"] == 0  # its header declares 1200 frames: refused up front
    assert rows[f["8k"]["path"]]["frames_decoded"] == 0
    assert 48 <= rows[f["bomb"]["path"]]["frames_decoded"] <= 50  # stopped at the frame over 1e8 pixels

    monkeypatch.delenv("DFSERVE_MAX_TOTAL_PIXELS")
    out2 = tmp_path / "no limits.jsonl"
    assert main(["score", f["long"]["path"], "--models", str(exported.out_dir), "--out", str(out2), "--no-progress",
                 "--no-summary", "--sample", "every:60"]) == 0
    (row,) = load_rows(out2)
    assert row["error"] is None or row["error"]["type"] == "NoFaceError"
    assert row["frames_decoded"] == 1200
