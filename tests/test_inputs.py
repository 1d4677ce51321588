"""Videos as they come (phones, the web, archives): each kind on a real generated file.

Every input yields exactly one row; every error names the file and the problem. Cases whose encoder
this FFmpeg build lacks are skipped with the reason (PyAV 18's wheels have libx264, libx265,
libvpx-vp9, libsvtav1 (+ libdav1d to decode), mpeg4, mjpeg and gif).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dfserve import samples
from dfserve.errors import VideoError
from dfserve.pipeline.decode import DecodeStats, iter_frames, probe
from dfserve.pipeline.sampling import parse_policy

VFR_TIMES = [0, 0.04, 0.08, 0.5, 0.52, 1.5, 1.55, 1.6, 2.0]

# name -> (generator, codec needed or None, expected outcome: "scored" or a phrase of the error)
KINDS = {
    "portrait phone.mp4": (lambda p: samples.make_portrait_phone_video(p), "h264", "scored"),
    "hevc 10-bit.mp4": (lambda p: samples.make_face_video(p, 8, 320, 180, codec="hevc", pix_fmt="yuv420p10le"),
                        "hevc", "scored"),
    "vp9.webm": (lambda p: samples.make_face_video(p, 8, 320, 180, codec="vp9"), "vp9", "scored"),
    "av1.webm": (lambda p: samples.make_face_video(p, 8, 320, 180, codec="av1"), "av1", "scored"),
    "h264.mov": (lambda p: samples.make_face_video(p, 8, 320, 180), "h264", "scored"),
    "mpeg4.avi": (lambda p: samples.make_face_video(p, 8, 320, 180, codec="mpeg4"), "mpeg4", "scored"),
    "odd 321x241 vp9.webm": (lambda p: samples.make_face_video(p, 8, 321, 241, codec="vp9"), "vp9", "scored"),
    "odd 321x241 h264 444.mp4": (lambda p: samples.make_face_video(p, 8, 321, 241, pix_fmt="yuv444p"), "h264",
                                 "scored"),
    "vfr.mkv": (lambda p: samples.make_vfr_video(p, VFR_TIMES), "h264", "scored"),
    "animated.gif": (lambda p: samples.make_gif(p, 10), None, "scored"),
    "png renamed.mp4": (lambda p: samples.make_still_image(p, "PNG"), None, "a still image, not a video"),
    "jpeg renamed.mov": (lambda p: samples.make_still_image(p, "JPEG"), None, "a still image, not a video"),
    "still.gif": (lambda p: samples.make_gif(p, 1), None, "a still image, not a video"),
    "absurd size.y4m": (lambda p: samples.make_absurd_size_file(p), None, "absurd frame size 16000x16000"),
    "absurd duration.mkv": (lambda p: samples.make_absurd_duration_file(p), "h264", "absurd duration"),
}


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    d = tmp_path_factory.mktemp("real world") / "phone clips"
    d.mkdir()
    made, skipped = {}, {}
    for name, (gen, codec, expect) in KINDS.items():
        if codec and samples.encoder_for(codec) is None:
            skipped[name] = f"this FFmpeg build has no {codec} encoder"
            continue
        p = d / name
        made[name] = {"path": str(p), "expect": expect, "truth": gen(p)}
    return {"dir": d, "made": made, "skipped": skipped}


def _get(kinds, name):
    if name in kinds["skipped"]:
        pytest.skip(kinds["skipped"][name])
    return kinds["made"][name]


def _decode(path, policy="all"):
    info = probe(path)
    stats = DecodeStats()
    idx, frames = [], []
    for i, f in iter_frames(path, parse_policy(policy), info, stats):
        idx += i
        frames += f
    return info, stats, idx, frames


def test_portrait_phone_clip_is_decoded_upright(kinds):
    k = _get(kinds, "portrait phone.mp4")
    info, _, idx, frames = _decode(k["path"])
    up = k["truth"]["upright"]
    assert k["truth"]["stored"] == (180, 320)  # stored landscape
    assert frames[0].shape == up[0].shape == (320, 180, 3)  # height x width: portrait, as displayed
    assert info.rotation == -90 and (info.width, info.height) == (180, 320)
    err = [np.abs(f.astype(int) - u.astype(int)).mean() for f, u in zip(frames, up)]
    assert max(err) < 6  # the same pixels, upright (only compression error)
    wrong = np.abs(np.rot90(frames[0], 2).astype(int) - up[0].astype(int)).mean()
    assert wrong > 3 * max(err)


@pytest.mark.parametrize("rotation", [90, 180])
def test_other_display_rotations(tmp_path, rotation):
    t = samples.make_portrait_phone_video(tmp_path / f"rot{rotation}.mp4", n_frames=3, rotation=rotation)
    info, _, _, frames = _decode(t["path"])
    assert info.rotation % 360 == rotation % 360 and frames[0].shape == (320, 180, 3)
    assert max(np.abs(f.astype(int) - u.astype(int)).mean() for f, u in zip(frames, t["upright"])) < 6


@pytest.mark.parametrize("rotation", [-90, 90, 180])
def test_rotated_frames_equal_opencvs(tmp_path, rotation):
    """Pixel for pixel what the seed apps' cv2.VideoCapture gives. OpenCV auto-rotates by default from 4.5 to
    4.10 and again from 4.12; 4.11.0 turned it off by mistake (opencv/opencv#26795), so it is set here."""
    cv2 = pytest.importorskip("cv2")
    t = samples.make_portrait_phone_video(tmp_path / f"cv{rotation}.mp4", n_frames=4, rotation=rotation)
    cap = cv2.VideoCapture(t["path"])
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    theirs = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        theirs.append(f)
    cap.release()
    _, _, _, ours = _decode(t["path"])
    assert len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape == (320, 180, 3) and np.abs(a.astype(int) - b.astype(int)).max() <= 1


@pytest.mark.parametrize("name", ["hevc 10-bit.mp4", "vp9.webm", "av1.webm", "h264.mov", "mpeg4.avi",
                                  "odd 321x241 vp9.webm", "odd 321x241 h264 444.mp4", "animated.gif"])
def test_codecs_and_containers_decode(kinds, name):
    k = _get(kinds, name)
    t = k["truth"]
    info, stats, idx, frames = _decode(k["path"])
    assert stats.frames_decoded == t["frames"] and idx == list(range(t["frames"]))
    assert frames[0].shape == (t["height"], t["width"], 3) and frames[0].dtype == np.uint8
    src = samples.face_frames(t["frames"], t["width"], t["height"])
    err = np.abs(frames[0].astype(int) - src[0].astype(int)).mean()
    assert err < (25 if name.endswith(".gif") else 8), err  # GIF: 256 colours


def test_hevc_10bit_is_10bit(kinds):
    import av

    k = _get(kinds, "hevc 10-bit.mp4")
    with av.open(k["path"]) as c:
        assert next(c.decode(video=0)).format.name.startswith("yuv420p10")


def test_fps_sampling_uses_timestamps_on_variable_frame_rate(kinds):
    k = _get(kinds, "vfr.mkv")
    _, stats, idx, _ = _decode(k["path"], "fps:2")
    assert stats.frames_decoded == len(VFR_TIMES)
    # the first frame of each half second of presentation time: t = 0, 0.5, 1.5, 2.0
    assert idx == [0, 3, 5, 8]
    # a constant-rate video samples the same frames by time as by index
    k2 = _get(kinds, "h264.mov")
    _, _, idx2, _ = _decode(k2["path"], "fps:10")
    assert idx2 == [0, 3, 6]


@pytest.mark.parametrize("name", ["png renamed.mp4", "jpeg renamed.mov", "still.gif", "absurd size.y4m",
                                  "absurd duration.mkv"])
def test_refused_inputs_name_the_file_and_the_problem(kinds, name):
    k = _get(kinds, name)
    with pytest.raises(VideoError) as e:
        _decode(k["path"])
    assert k["path"] in str(e.value) and k["expect"] in str(e.value)


def test_decode_time_budget(kinds, monkeypatch):
    k = _get(kinds, "h264.mov")
    monkeypatch.setenv("DFSERVE_DECODE_TIMEOUT_S", "0")
    with pytest.raises(VideoError, match="time budget") as e:
        _decode(k["path"])
    assert k["path"] in str(e.value)


def _cli(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "dfserve.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_score_every_kind_one_row_each(kinds, exported, tmp_path):
    """One `dfserve score` batch over every kind plus missing / unreadable / empty files."""
    paths = [k["path"] for k in kinds["made"].values()]
    gone = kinds["dir"] / "vanished before reading.mp4"
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    extra = {str(gone): "no such file", str(empty): "empty file"}  # (a folder given is searched, not scored)
    if os.geteuid() != 0:  # root reads any file whatever its mode: then the vanished path stands in
        locked = tmp_path / "locked.mp4"
        locked.write_bytes(Path(kinds["made"]["h264.mov"]["path"]).read_bytes())
        locked.chmod(0)
        extra[str(locked)] = "permission denied"
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(paths + list(extra)) + "\n")
    out = tmp_path / "rows.jsonl"
    r = _cli("score", f"@{lst}", "--models", exported.out_dir, "--out", out, "--no-progress", "--no-face", "frame",
             "--decode-workers", "2")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(row["path"] for row in rows) == sorted(paths + list(extra))  # exactly one row per input
    by = {row["path"]: row for row in rows}
    for name, k in kinds["made"].items():
        row = by[k["path"]]
        if k["expect"] == "scored":
            assert row["error"] is None and row["label"] in ("FAKE", "REAL"), (name, row)
            assert row["frames_scored"] == k["truth"]["frames"], (name, row)
        else:
            assert row["label"] is None and row["error"]["type"] == "VideoError", (name, row)
            assert k["path"] in row["error"]["message"] and k["expect"] in row["error"]["message"], (name, row)
    for p, phrase in extra.items():
        assert by[p]["label"] is None and p in by[p]["error"]["message"] and phrase in by[p]["error"]["message"]
    # the upright portrait clip: its face is found (the detector does not see faces lying sideways well)
    assert by[kinds["made"]["portrait phone.mp4"]["path"]]["frames_with_face"] >= 6
    print("kinds skipped:", kinds["skipped"])


def test_file_vanishing_mid_batch(exported, videos, tmp_path):
    """A file removed while the batch runs gets an error row; the batch goes on."""
    from dfserve.pipeline.options import ScoreOptions
    from dfserve.scoring import ScorerConfig, make_scorer

    src = videos["face"]["path"]
    paths = []
    for k in range(4):
        p = tmp_path / f"v{k}.mp4"
        os.link(src, p)
        paths.append(str(p))
    scorer = make_scorer(ScoreOptions(sample="every:3", decode_workers=1, chunk=4), ScorerConfig(models=exported.out_dir))
    rows = []
    for row in scorer.score(paths):
        if not rows:
            os.unlink(paths[-1])  # vanishes while the first video is being scored
        rows.append(row)
    assert [r["path"] for r in rows] == paths
    assert all(r["error"] is None for r in rows[:3])
    assert rows[3]["label"] is None and paths[3] in rows[3]["error"]["message"]
    assert "no such file" in rows[3]["error"]["message"]


def test_fps_sampling_survives_timestamps_going_backwards():
    """Concatenated streams (TS captures) restart their clock: sampling continues, it does not stall."""
    from fractions import Fraction

    s = parse_policy("fps:10").sampler(30.0, None)
    times = [Fraction(i, 30) for i in range(12)] * 2  # the second half restarts at 0
    assert [i for i, t in enumerate(times) if s.keep(i, t)] == [0, 3, 6, 9, 12, 15, 18, 21]
    s = parse_policy("fps:10").sampler(30.0, None)  # no timestamps: by index at the nominal rate
    assert [i for i in range(24) if s.keep(i)] == [0, 3, 6, 9, 12, 15, 18, 21]


def test_truncated_faststart_mp4_is_scored_with_a_warning(exported, tmp_path):
    """An mp4 whose index is at the front, cut in half: what decodes is scored, and the row says the file
    is truncated (frames decoded versus the frames the container declares)."""
    import av

    from dfserve import samples
    from dfserve.pipeline.engine import ScoreOptions, Scorer
    from dfserve.pipeline.runtimes.ort import OnnxRuntime

    src = tmp_path / "src.mp4"
    samples.make_face_video(src, n_frames=60, width=320, height=180)
    fast = tmp_path / "faststart.mp4"
    with av.open(str(src)) as i, av.open(str(fast), "w", options={"movflags": "faststart"}) as o:
        st = o.add_stream_from_template(i.streams.video[0])
        for pkt in i.demux(i.streams.video[0]):
            if pkt.dts is not None:
                pkt.stream = st
                o.mux(pkt)
    data = fast.read_bytes()
    cut = tmp_path / "cut in half.mp4"
    cut.write_bytes(data[: len(data) // 2])
    row = next(Scorer(OnnxRuntime(exported.out_dir), ScoreOptions()).score([str(cut)]))
    assert row["error"] is None and 0 < row["frames_decoded"] < 60
    assert "of the 60 frames the container declares" in row["warning"] and "truncated" in row["warning"]
    full = next(Scorer(OnnxRuntime(exported.out_dir), ScoreOptions()).score([str(fast)]))
    assert full["warning"] is None and full["frames_decoded"] == 60
