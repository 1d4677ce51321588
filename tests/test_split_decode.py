"""Split decode (`--split K`): one video as key-frame ranges decoded in parallel gives exactly the frames one
decoder gives (per-frame md5 of the BGR bytes, with their indices), for every sampling policy, on H.264 with
B-frames and open GOPs, HEVC, VP9, VFR, a rotated phone clip and TS files whose frame size changes; files it
cannot split safely fall back to one decoder with a log line."""
from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
from fractions import Fraction

import pytest

from dfserve import samples, spec
from dfserve.errors import UsageError
from dfserve.pipeline.decode import DecodeStats, iter_frames, probe
from dfserve.pipeline.sampling import parse_policy
from dfserve.pipeline.split_decode import iter_frames_split, parse_split, ranges_wanted, read_timeline

POLICIES = ("all", "every:3", "fps:7", "uniform:9", "first:13")
N = 40  # frames per clip: 4 key-frame ranges of 10
VFR_GAPS_MS = [(33, 17, 50, 25, 40)[i % 5] + (300 if i == 15 else 0) for i in range(N)]  # a stall at frame 15
VFR_TIMES = [sum(VFR_GAPS_MS[:i]) / 1000 for i in range(N)]


def _clip(codec, ext, **kw):
    def make(path):
        samples.make_face_video(path, N, 320, 180, codec=codec, codec_options=samples.keyframe_options(codec, 10),
                                **kw)
    return make, codec


def _vfr(path):
    pts = [int(t * 1000) for t in VFR_TIMES]
    samples.write_video(path, samples.face_frames(N, 320, 180, seed=4), 30, "h264", pts=pts,
                        time_base=Fraction(1, 1000), codec_options=samples.keyframe_options("h264", 10))


def _portrait(path):
    upright = samples.face_frames(N, 180, 320, seed=3)
    samples.write_video(path, [f.transpose(1, 0, 2)[::-1] for f in upright], 30, "h264", rotation=-90,
                        codec_options=samples.keyframe_options("h264", 10))


def _closed(path):
    samples.make_face_video(path, N, 320, 180, codec="h264",
                            codec_options=samples.keyframe_options("h264", 10, open_gop=False))


def _switch(path):
    samples.make_resolution_switch_video(path, sizes=((320, 180), (480, 272)), n_each=20, keyint=10, continuous=True)


SPLITTABLE = {
    "h264 bframes open-gop.mp4": _clip("h264", "mp4"),
    "h264 bframes open-gop.mkv": _clip("h264", "mkv"),
    "h264 closed-gop.mp4": (_closed, "h264"),
    "hevc open-gop.mkv": _clip("hevc", "mkv"),
    "vp9.webm": _clip("vp9", "webm"),
    "vfr.mkv": (_vfr, "h264"),
    "portrait phone.mp4": (_portrait, "h264"),
    "size switch.ts": (_switch, "h264"),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("split corpus") / "with space"
    d.mkdir()
    out = {}
    for name, (make, codec) in SPLITTABLE.items():
        if samples.encoder_for(codec) is None:
            continue
        make(d / name)
        out[name] = str(d / name)
    restart = d / "cat restarted clock.ts"
    samples.make_resolution_switch_video(restart, sizes=((320, 180), (480, 272)), n_each=20, keyint=10)
    out["restart"] = str(restart)
    raw = d / "raw.h264"
    samples.write_video(raw, samples.face_frames(N, 320, 180), 30, "h264", container_format="h264",
                        codec_options=samples.keyframe_options("h264", 10))
    out["raw"] = str(raw)
    out["dir"] = d
    return out


def _decode(path, policy, split=None, cores=8):
    """[(index, md5 of the BGR frame)], stats, (rotation, width, height) after decoding; split None: one decoder."""
    info = probe(path, count_if_unknown=parse_policy(policy).needs_frame_count)
    stats = DecodeStats()
    if split is None:
        chunks = iter_frames(path, parse_policy(policy), info, stats, 7)
    else:
        chunks = iter_frames_split(path, parse_policy(policy), info, stats, 7, split=split, cores=cores)
    got = []
    for idx, frames in chunks:
        assert len(idx) <= 7
        got += [(i, f.shape, hashlib.md5(f.tobytes()).hexdigest()) for i, f in zip(idx, frames)]
    return got, stats, (info.rotation, info.width, info.height)


@pytest.mark.parametrize("name", list(SPLITTABLE))
def test_split_gives_the_frames_of_one_decoder(corpus, name):
    if name not in corpus:
        pytest.skip(f"this FFmpeg build has no {SPLITTABLE[name][1]} encoder")
    path = corpus[name]
    kept = {}
    for policy in POLICIES:
        ref, ref_stats, ref_info = _decode(path, policy)
        got, stats, info = _decode(path, policy, split="4")
        assert got == ref, (name, policy)
        assert (stats.frames_decoded, stats.warning, info) == (ref_stats.frames_decoded, ref_stats.warning, ref_info)
        assert stats.ranges == (2 if policy == "first:13" else 4), (name, policy)  # really split
        kept[policy] = ref
    assert len(kept["all"]) == N and len(kept["first:13"]) == 13 and len(kept["uniform:9"]) == 9
    if name == "portrait phone.mp4":
        assert {shape for _, shape, _ in kept["all"]} == {(320, 180, 3)}  # upright, as one decoder gives them
    if name == "size switch.ts":
        assert {shape for _, shape, _ in kept["all"]} == {(180, 320, 3), (272, 480, 3)}


def test_timeline_of_an_open_gop_clip(corpus):
    """Open GOPs: each key frame is decoded before B-frames shown before it; they stay in the range before."""
    path = corpus["h264 bframes open-gop.mp4"]
    tl = read_timeline(path)
    assert tl.starts == [10, 20, 30] and len(tl.pts) == N and tl.pts == sorted(tl.pts)
    import av

    with av.open(path) as c:
        order = [p.pts for p in c.demux() if p.size]
    key10 = order.index(tl.pts[10])
    assert any(p < tl.pts[10] for p in order[key10 + 1:]), "the clip should have leading pictures (open GOP)"


@pytest.mark.parametrize("name, why", [("restart", "repeated timestamps"), ("raw", "no presentation timestamp")])
def test_files_without_usable_timestamps_fall_back_to_one_decoder(corpus, caplog, name, why):
    caplog.set_level(logging.INFO, logger="dfserve.pipeline.split_decode")
    for policy in ("all", "fps:7"):
        ref, ref_stats, ref_info = _decode(corpus[name], policy)
        got, stats, info = _decode(corpus[name], policy, split="4")
        assert got == ref and stats.ranges == 1 and info == ref_info
    assert "split decode off, one decoder: " in caplog.text and why in caplog.text


def test_a_range_that_fails_to_decode_ends_as_one_decoder_does(corpus, tmp_path, caplog):
    """A broken packet in the third range: one decoder takes over and stops where it stops, with its warning."""
    import av

    src = corpus["h264 bframes open-gop.mkv"]
    with av.open(src) as c:
        packets = [(p.pts, p.pos, p.size) for p in c.demux() if p.size]
    pts, pos, size = [p for p in packets if p[0] == sorted(q[0] for q in packets)[25]][0]
    data = bytearray(open(src, "rb").read())
    data[pos + 4 + size // 4:pos + 4 + size * 3 // 4] = b"\x5a" * (size * 3 // 4 - size // 4)
    bad = tmp_path / "broken mid.mkv"
    bad.write_bytes(bytes(data))
    ref, ref_stats, _ = _decode(str(bad), "all")
    got, stats, _ = _decode(str(bad), "all", split="4")
    assert ref_stats.warning and "decoding stopped after frame" in ref_stats.warning
    assert got == ref and stats.warning == ref_stats.warning and stats.frames_decoded == ref_stats.frames_decoded
    assert "split decode fell back to one decoder" in caplog.text and "failed to decode" in caplog.text


def test_one_key_frame_means_one_decoder(corpus, tmp_path):
    one = tmp_path / "one key.mp4"
    samples.make_face_video(one, 20, 160, 96)  # x264's default GOP: one key frame
    got, stats, _ = _decode(str(one), "all", split="4")
    assert stats.ranges == 1 and got == _decode(str(one), "all")[0]


def test_auto_picks_one_range_on_two_cores_and_more_where_cores_allow(corpus):
    tl = read_timeline(corpus["h264 bframes open-gop.mp4"])
    assert ranges_wanted(spec.SPLIT_AUTO, tl, N, cores=2) == 1
    assert ranges_wanted(spec.SPLIT_AUTO, tl, N, cores=16) == 1  # 40 frames: ranges of 32 frames at least
    assert ranges_wanted(spec.SPLIT_AUTO, tl, 1000, cores=16) == 4  # 4 key-frame ranges
    assert ranges_wanted(spec.SPLIT_AUTO, tl, 1000, cores=6) == 3  # 2 cores a range
    assert ranges_wanted("2", tl, N, cores=2) == 2
    got, stats, _ = _decode(corpus["h264 bframes open-gop.mp4"], "all", split="auto", cores=2)
    assert stats.ranges == 1 and len(got) == N


def test_split_option_values():
    from dfserve.pipeline.options import ScoreOptions

    assert parse_split("AUTO") == "auto" and parse_split(4) == "4" and parse_split(" 2 ") == "2"
    for bad in ("0", "-1", "two", spec.MAX_SPLIT + 1, True, "1.5"):
        with pytest.raises(UsageError, match="--split"):
            parse_split(bad)
    assert ScoreOptions().split == "auto"
    assert ScoreOptions.from_json({"split": 3}).split == "3" and ScoreOptions.from_json('{"split": "auto"}').split == "auto"
    assert json.loads(ScoreOptions(split=2).to_json())["split"] == "2"


def test_score_rows_with_split_1_and_4_are_identical(exported, corpus):
    """`dfserve score --split 1` and `--split 4`: every field of every row but the timing."""
    paths = [corpus["h264 bframes open-gop.mp4"], corpus["size switch.ts"], corpus["restart"]]

    def rows(k):
        r = subprocess.run([sys.executable, "-m", "dfserve.cli", "score", *paths, "--models", str(exported.out_dir),
                            "--split", k, "--timeline", "--sample", "every:2", "--no-progress", "--no-summary",
                            "--decode-workers", "1"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        out = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
        for row in out:
            row.pop("elapsed_s")
        return out

    one, four = rows("1"), rows("4")
    assert len(one) == 3 and one == four
    assert all(r["error"] is None and r["frames_scored"] > 0 for r in one)


def test_the_scorer_decodes_with_its_split_option(exported, corpus):
    from dfserve.pipeline.options import ScoreOptions
    from dfserve.scoring import ScorerConfig, make_scorer

    path = corpus["hevc open-gop.mkv"] if "hevc open-gop.mkv" in corpus else corpus["h264 bframes open-gop.mkv"]
    scorer = make_scorer(ScoreOptions(split=3), ScorerConfig(models=exported.out_dir))
    stats = DecodeStats()
    idx = [i for chunk, _ in scorer.iter_frames(path, parse_policy("all"), probe(path), stats) for i in chunk]
    assert idx == list(range(N)) and stats.ranges == 3


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["h264 closed-gop.mp4", "h264 bframes open-gop.mp4", "hevc open-gop.mkv",
                                  "portrait phone.mp4", "vfr.mkv"])
def test_nvdec_split_gives_the_frames_of_one_nvdec_session(corpus, name):
    """`--split 4` on CUDA (one NVDEC session per key-frame range, nvdec.py) against one session: the same
    indices and the same BGR bytes for every policy. On closed GOPs the four sessions really run; on the open-GOP
    clips NVDEC's timestamps after a seek sit one frame off the first range's (seen on an H200: -512 against
    -1024), so the split falls back to one session there, with the same frames."""
    pytest.importorskip("PyNvVideoCodec")
    from dfserve.pipeline.nvdec import iter_frames_nvdec, iter_frames_nvdec_split

    if name not in corpus:
        pytest.skip(f"no encoder for {name}")
    path = corpus[name]

    def run(policy, split):
        info = probe(path, count_if_unknown=parse_policy(policy).needs_frame_count)
        stats = DecodeStats()
        chunks = (iter_frames_nvdec(path, parse_policy(policy), info, stats, 7) if split is None else
                  iter_frames_nvdec_split(path, parse_policy(policy), info, stats, 7, split=split))
        got = []
        for idx, batch in chunks:
            got += [(i, hashlib.md5(f.cpu().numpy().tobytes()).hexdigest()) for i, f in zip(idx, batch)]
        return got, stats

    for policy in POLICIES:
        one, _ = run(policy, None)
        four, stats = run(policy, "4")
        assert four == one, (name, policy)
        if name == "h264 closed-gop.mp4" and policy == "all":
            assert stats.ranges == 4


def test_decoder_threads_one_on_two_cores_and_the_same_frames(videos, monkeypatch):
    """decode.decoder_threads: one FFmpeg thread on <= 2 cores (measured faster there), FFmpeg's own choice
    above, $DFSERVE_DECODER_THREADS overrides; the thread count changes speed only, never the frames."""
    import hashlib

    import av

    from dfserve.pipeline import decode

    monkeypatch.delenv(decode.DECODER_THREADS_ENV, raising=False)
    for cores, want in ((1, 1), (2, 1), (3, 0), (16, 0)):
        monkeypatch.setattr(decode.os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert decode.decoder_threads() == want
    monkeypatch.setattr(decode.os, "sched_getaffinity", lambda _pid: {0, 1})
    path = videos["face"]["path"]
    with av.open(path) as c:
        assert decode.decoder_stream(c, path).thread_count == 1

    def digest():
        h = hashlib.md5()
        for _, chunk in iter_frames(path, parse_policy("all"), probe(path), DecodeStats(), 16):
            for f in chunk:
                h.update(f.tobytes())
        return h.hexdigest()

    one = digest()
    monkeypatch.setenv(decode.DECODER_THREADS_ENV, "0")
    assert decode.decoder_threads() == 0
    assert digest() == one
    monkeypatch.setenv(decode.DECODER_THREADS_ENV, "many")
    with pytest.raises(UsageError):
        decode.decoder_threads()
