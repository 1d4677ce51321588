"""Frames that travel as their decoded planes (frame_planes.py) become, on the device, exactly the BGR the CPU
path gives (8-bit tagged and full-range, 10/12-bit, rotated, size changes, split decode), frames the device
conversion cannot reproduce stay BGR; and CPU decoders joining the main decoders (`--cpu-decoders`) take videos
only while more wait than the main decoders can take, and change no row."""
from __future__ import annotations

import numpy as np
import pytest

from dfserve import samples, spec
from dfserve.errors import UsageError
from dfserve.pipeline.decode import DecodeStats, iter_frames, probe
from dfserve.pipeline.sampling import parse_policy

torch = pytest.importorskip("torch")
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("planes clips")
    out = {}
    for kind in samples.COLOUR_CLIPS:
        try:
            out[kind] = samples.make_colour_clip(d / f"{kind}.mp4", kind, n_frames=5)["path"]
        except Exception:  # noqa: BLE001 - an encoder this FFmpeg build lacks
            pass
    out["portrait"] = samples.make_portrait_phone_video(d / "portrait.mp4", n_frames=6)["path"]
    frames = samples.face_frames(6, 162, 92, seed=1)
    samples.write_video(d / "odd.webm", [f[:91, :161] for f in frames], codec="vp9")  # 161x91: odd 4:2:0
    out["odd size"] = str(d / "odd.webm")
    samples.write_video(d / "444.mp4", frames, codec="h264", pix_fmt="yuv444p")
    out["4:4:4"] = str(d / "444.mp4")
    return out


def _bgr(path, policy="all", colors="seed"):
    info = probe(path)
    return [(i, f) for idx, fr in iter_frames(path, parse_policy(policy), info, DecodeStats(), 4, colors=colors)
            for i, f in zip(idx, fr)], info


def _uploaded(path, policy="all", colors="seed", split="1", device="cpu"):
    from dfserve.pipeline.gpu_scorer import iter_frames_uploaded

    info = probe(path)
    got = []
    for idx, batch in iter_frames_uploaded(path, parse_policy(policy), info, DecodeStats(), 4, device=device,
                                           colors=colors, split=split, planes=True):
        assert batch.dtype == torch.uint8 and batch.dim() == 4 and batch.device.type == device
        got += [(i, f.cpu().numpy()) for i, f in zip(idx, batch)]
    return got, info


def _same(a, b):
    assert [i for i, _ in a] == [i for i, _ in b]
    for (i, x), (_, y) in zip(a, b):
        assert x.shape == y.shape and np.array_equal(x, y), f"frame {i}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", list(samples.COLOUR_CLIPS) + ["portrait", "odd size", "4:4:4"])
def test_planes_become_the_cpu_paths_bgr(clips, kind, device):
    """On the CPU and, where there is one, on a GPU: integer arithmetic only, so byte-equal on both."""
    if kind not in clips:
        pytest.skip(f"this FFmpeg build cannot encode {kind}")
    ref, ref_info = _bgr(clips[kind])
    got, info = _uploaded(clips[kind], device=device)
    _same(got, ref)
    assert (info.width, info.height, info.rotation) == (ref_info.width, ref_info.height, ref_info.rotation)


def test_which_frames_travel_as_planes(clips):
    import av

    from dfserve.pipeline.frame_planes import Planes, planes_or_bgr

    def form(kind, colors="seed"):
        with av.open(clips[kind]) as c:
            f = next(c.decode(video=0))
            return planes_or_bgr(f, colors, f.rotation or 0)

    p = form("bt709 full range")
    assert isinstance(p, Planes) and (p.bits, p.full_range) == (8, True)
    assert p.data.nbytes == 160 * 128 * 3 // 2  # half of BGR's bytes
    if "untagged 10-bit" in clips:
        p10 = form("untagged 10-bit")
        assert isinstance(p10, Planes) and p10.bits == 10 and p10.data.dtype == np.dtype("<u2")
    portrait = form("portrait")
    assert isinstance(portrait, Planes) and portrait.shape == (320, 180, 3)  # upright, as BGR would be
    for kind in ("odd size", "4:4:4"):
        assert isinstance(form(kind), np.ndarray), kind  # the device conversion does not model these: BGR
    assert isinstance(form("bt709", colors="stream"), np.ndarray)  # the stream's matrix: swscale's BGR


def test_stream_colours_and_size_changes_and_split(clips, switch_videos, videos):
    """--colors stream (BGR from the CPU), a mid-stream size change (one batch per size), split ranges."""
    _same(_uploaded(clips["bt709"], colors="stream")[0], _bgr(clips["bt709"], colors="stream")[0])
    ts = switch_videos["ts_360_720"]["path"]
    got, _ = _uploaded(ts, policy="every:2")
    _same(got, _bgr(ts, policy="every:2")[0])
    assert {f.shape for _, f in got} == {(360, 640, 3), (720, 1280, 3)}
    face = videos["face"]["path"]
    _same(_uploaded(face, split="3")[0], _bgr(face)[0])


def test_form_runs_split_where_the_form_changes():
    from dfserve.pipeline.frame_planes import Planes, form_runs

    def pl(bits=8, rot=0):
        return Planes(np.zeros(6, np.uint8), 2, 2, bits, False, rot)

    bgr = np.zeros((2, 2, 3), np.uint8)
    frames = [pl(), pl(), bgr, bgr, pl(10), pl(8, 90), pl(8, 90)]
    assert [idx for idx, _ in form_runs(range(7), frames)] == [[0, 1], [2, 3], [4], [5, 6]]


# ----------------------------------------------------------------------------- CPU decoders joining
def _rows(scorer, paths):
    rows = {}
    for r in scorer.score(paths):
        r.pop("elapsed_s", None)
        rows[r["path"]] = r
    return rows


@pytest.fixture(scope="module")
def batch(videos, switch_videos):
    return [videos[k]["path"] for k in ("face", "hevc", "noface", "corrupt", "face", "hevc")] + \
        [switch_videos["ts_360_720"]["path"]]


def test_cpu_decoders_join_and_change_no_row(seed_model, batch):
    """A torch scorer on the CPU: one main decoder (BGR) and two joining CPU decoders (planes, converted by
    torch): the rows of one decoder, within the classifier's batch rounding; the joining decoders took videos,
    never the last ones."""
    from dfserve.pipeline.engine import ScoreOptions
    from dfserve.pipeline.gpu_scorer import TorchScorer
    from dfserve.pipeline.runtimes.torch_rt import TorchRuntime

    rt = TorchRuntime(seed_model, device="cpu")
    opts = dict(sample=parse_policy("every:3"), timeline=True, chunk=4, decode_workers=1)
    one = TorchScorer(rt, ScoreOptions(**opts))
    assert one.cpu_decoders(nvdec=False) == 0 and len(one.decoders()) == 1
    ref = _rows(one, batch)
    joined = TorchScorer(rt, ScoreOptions(cpu_decoders=2, **opts))
    joined.planes = True  # as on a GPU: the joining decoders hand their planes over, converted by torch
    kinds = [d.helper for d in joined.decoders()]
    assert kinds == [False, True, True]
    rows = _rows(joined, batch)
    assert rows.keys() == ref.keys()
    for path, r in rows.items():
        want = ref[path]
        for k in want:
            if k == "p_fake" and want[k] is not None:
                assert abs(r[k] - want[k]) <= 1e-5, path
            elif k == "timeline":
                assert [(t[0], t[2]) for t in r[k]] == [(t[0], t[2]) for t in want[k]], path
            elif k != "confidence":
                assert r[k] == want[k], (path, k)
    # 5 distinct files (two given twice): rows are per path, the decoders saw all 7 jobs
    counts = joined.videos_by_decoder
    assert sum(counts.values()) == len(batch)
    assert 1 <= counts["pyav"] and 1 <= counts["pyav (joined)"] <= len(batch) - 1, counts


def test_helpers_take_videos_only_while_more_wait_than_the_main_decoders_can_take():
    """engine.Decoder's rule, with real threads: two main decoders, four helpers, three videos: the helpers may
    take at most one (while three wait), the main decoders the rest, whatever the threads' order."""
    from dfserve.pipeline.engine import Decoder, ScoreOptions, Scorer

    seen = []

    class Probe(Scorer):
        def decoders(self):
            main = Decoder("main", self.iter_frames)
            return [main, main] + [Decoder("cpu", self.iter_frames, helper=True)] * 4

    class Rt:
        name = "none"

    for _ in range(20):
        s = Probe(Rt(), ScoreOptions(decode_workers=2))
        rows = list(s.score(["/nonexistent/a.mp4", "/nonexistent/b.mp4", "/nonexistent/c.mp4"]))
        assert len(rows) == 3 and all(r["error"] for r in rows)  # each a row naming its missing file
        seen.append(s.videos_by_decoder["cpu (joined)"])
        assert s.videos_by_decoder["main"] + s.videos_by_decoder["cpu (joined)"] == 3
    assert max(seen) <= 1


def test_cpu_decoders_option(monkeypatch):
    from dfserve.pipeline import engine
    from dfserve.pipeline.engine import ScoreOptions, Scorer

    assert ScoreOptions().cpu_decoders == spec.DEFAULT_CPU_DECODERS == "0"
    assert ScoreOptions(cpu_decoders=3).validate().cpu_decoders == "3"
    assert ScoreOptions.from_json({"cpu_decoders": "AUTO"}).cpu_decoders == "auto"
    for bad in (-1, "many", spec.MAX_CPU_DECODERS + 1, True):
        with pytest.raises(UsageError, match="--cpu-decoders"):
            ScoreOptions(cpu_decoders=bad).validate()

    class Rt:
        name = "none"

    s = Scorer(Rt(), ScoreOptions(cpu_decoders="auto", decode_workers=3))
    monkeypatch.setattr(engine, "cpu_cores", lambda: 16)
    assert s.cpu_decoders(nvdec=False) == 0  # no NVDEC: the main decoders are CPU decoders already
    assert s.cpu_decoders(nvdec=True) == (16 - spec.CPU_DECODERS_RESERVED_CORES) // spec.CPU_DECODER_CORES
    monkeypatch.setattr(engine, "cpu_cores", lambda: 2)
    assert s.cpu_decoders(nvdec=True) == 0
    assert [d.helper for d in Scorer(Rt(), ScoreOptions(cpu_decoders=2, decode_workers=1)).decoders()] == \
        [False, True, True]


def test_cli_cpu_decoders_flag_reaches_the_options():
    import argparse

    from dfserve.commands import add_score_options
    from dfserve.pipeline.engine import ScoreOptions

    p = argparse.ArgumentParser()
    add_score_options(p)
    assert ScoreOptions.from_args(p.parse_args(["v.mp4"])).cpu_decoders == "0"
    o = ScoreOptions.from_args(p.parse_args(["v.mp4", "--cpu-decoders", "auto"]))
    assert o.cpu_decoders == "auto" and ScoreOptions.from_json(o.to_json()).cpu_decoders == "auto"
    with pytest.raises(UsageError, match="--cpu-decoders"):
        ScoreOptions.from_args(p.parse_args(["v.mp4", "--cpu-decoders", "lots"]))


@pytest.mark.gpu
def test_cpu_decoders_join_nvdec_on_the_gpu(seed_model, batch):
    """On a GPU with NVDEC: two NVDEC sessions and two joining CPU decoders (planes converted on the GPU) give the
    rows of NVDEC alone (fp32, TF32 off: within the classifier's batch rounding); the CPU decoders took videos."""
    pytest.importorskip("PyNvVideoCodec")
    from dfserve.pipeline.engine import ScoreOptions
    from dfserve.pipeline.gpu_scorer import TorchScorer
    from dfserve.pipeline.runtimes.torch_rt import TorchRuntime

    rt = TorchRuntime(seed_model, device="cuda", fp16=False)
    opts = dict(sample=parse_policy("every:3"), chunk=8, decode_workers=2)
    alone = TorchScorer(rt, ScoreOptions(**opts))
    assert alone.decoder == "nvdec"
    ref = _rows(alone, batch * 2)
    joined = TorchScorer(rt, ScoreOptions(cpu_decoders=2, **opts))
    rows = _rows(joined, batch * 2)
    for path, r in rows.items():
        assert (r["frames_scored"], r["error"] is None) == (ref[path]["frames_scored"], ref[path]["error"] is None)
        if r["p_fake"] is not None:
            assert abs(r["p_fake"] - ref[path]["p_fake"]) <= 1e-4, path
    assert joined.videos_by_decoder["pyav (joined)"] >= 1 and joined.videos_by_decoder["nvdec"] >= 1
