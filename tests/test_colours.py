"""Frame colours: dfserve's frames equal what the seed's cv2.VideoCapture reads from colour-tagged and 10/12-bit
clips (real encoded videos, real OpenCV), on the CPU path and through the torch NV12 / P016 conversion."""
import numpy as np
import pytest

from dfserve import samples, spec
from dfserve.pipeline.decode import DecodeStats, iter_frames, probe
from dfserve.pipeline.frame_colours import frame_to_bgr, high_depth_420, seed_8bit_terms
from dfserve.pipeline.options import ScoreOptions
from dfserve.pipeline.sampling import parse_policy

EIGHT_BIT = ["bt709", "bt709 full range", "bt601", "untagged"]
HIGH_DEPTH = ["bt2020 hlg 10-bit", "untagged 10-bit", "untagged 12-bit"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("colour clips")
    out = {}
    for kind in samples.COLOUR_CLIPS:
        try:
            out[kind] = samples.make_colour_clip(d / f"{kind}.mp4", kind)
        except Exception as exc:  # noqa: BLE001 - an encoder this FFmpeg build lacks
            out[kind] = {"skip": f"cannot encode {kind}: {exc}"}
    return out


def _clip(clips, kind):
    if "skip" in clips[kind]:
        pytest.skip(clips[kind]["skip"])
    return clips[kind]


def _ours(path, colors=spec.DEFAULT_COLORS):
    info = probe(path)
    return [f for _, fr in iter_frames(path, parse_policy("all"), info, DecodeStats(), colors=colors) for f in fr]


def _opencv(path):
    from dfserve.bench.seed_pipeline import opencv_frames

    pytest.importorskip("cv2")
    return list(opencv_frames(path))


def _diff(a, b):
    d = np.abs(np.stack(a).astype(int) - np.stack(b).astype(int)).max(-1)
    return int(d.max()), float(np.mean(d > 0))


@pytest.mark.parametrize("kind", EIGHT_BIT)
def test_8bit_frames_equal_opencvs_whatever_the_tags(clips, kind):
    c = _clip(clips, kind)
    ours, theirs = _ours(c["path"]), _opencv(c["path"])
    assert len(ours) == len(theirs) == c["frames"]
    assert _diff(ours, theirs) == (0, 0.0)


@pytest.mark.parametrize("kind", HIGH_DEPTH)
def test_high_bit_depth_frames_equal_opencvs(clips, kind):
    c = _clip(clips, kind)
    ours, theirs = _ours(c["path"]), _opencv(c["path"])
    assert len(ours) == len(theirs) == c["frames"]
    assert _diff(ours, theirs) == (0, 0.0)


@pytest.mark.parametrize("bits,size", [(10, (64, 36)), (12, (96, 50)), (10, (1920, 1080)), (10, (66, 14)), (9, (64, 36)),
                                       (14, (64, 36)), (16, (64, 36))])
def test_high_bit_depth_random_planes_equal_opencvs(tmp_path, bits, size):
    """Random planes through a rawvideo clip (OpenCV and PyAV read the same samples): the integer model of
    swscale's scaled path equals OpenCV's frames bit for bit at even sizes (its MMX rows, its first rows' own
    filters, its C-output last two rows), for samples in the limited range, in the full range, and for any 16-bit
    value a crafted stream may hold above its bit depth; the torch conversion (NVDEC's P016, the planes a CPU
    decoder hands to a GPU) equals it."""
    import av
    import torch

    from dfserve.pipeline.gpu_colours import nv12_to_bgr

    rng = np.random.default_rng(bits + size[1])
    w, h = size
    frames = []
    for lo, hi in ((16 << (bits - 8), 236 << (bits - 8)), (0, 1 << bits), (0, 1 << 16)):
        frames.append((rng.integers(lo, hi, (h, w)).astype("<u2"),
                       rng.integers(lo, hi, (h // 2, w // 2)).astype("<u2"),
                       rng.integers(lo, hi, (h // 2, w // 2)).astype("<u2")))
    path = samples.write_raw_planes(tmp_path / "planes.nut", frames, f"yuv420p{bits}le")["path"]
    theirs = _opencv(path)
    with av.open(path) as con:
        ours = [frame_to_bgr(f) for f in con.decode(video=0)]
    assert len(ours) == len(theirs) == 3
    assert _diff(ours, theirs) == (0, 0.0)
    for (y, u, v), want in zip(frames, ours):
        t = lambda a: torch.from_numpy(a.view(np.int16))  # noqa: E731 - uint16 samples in int16 storage
        got = nv12_to_bgr(t(y), torch.stack([t(u), t(v)], -1), bits=bits)[0].numpy()
        assert np.array_equal(got, want)


def test_the_vertical_chroma_taps_are_the_bicubic_filter_in_12_bits():
    from dfserve.pipeline.frame_colours import CHROMA_TAPS_EVEN, chroma_taps, chroma_up_weights

    assert sum(CHROMA_TAPS_EVEN) == 4096
    assert all(abs(t - 4096 * f) < 1 for t, f in zip(CHROMA_TAPS_EVEN, chroma_up_weights()))
    idx, wt = chroma_taps(4, 8)
    assert (wt.sum(1) == 4096).all() and idx.max() == 3 and idx.min() == 0  # merged at the edges, never outside


def test_the_old_behaviour_differed_on_tagged_clips(clips):
    """--colors stream (PyAV's default, dfserve's frames before) applies BT.709 to a BT.709 clip: not OpenCV's."""
    c = _clip(clips, "bt709")
    stream, theirs = _ours(c["path"], "stream"), _opencv(c["path"])
    worst, frac = _diff(stream, theirs)
    assert worst >= 3 and frac > 0.3
    u = _clip(clips, "untagged")  # untagged 8-bit: both rules are BT.601 limited
    assert _diff(_ours(u["path"], "stream"), _ours(u["path"]))[0] <= 1


def test_colors_is_an_option_recorded_in_rows():
    assert ScoreOptions().colors == "seed" and "colors" in ScoreOptions().to_json(request_only=True)
    assert ScoreOptions.from_json({"colors": "stream"}).colors == "stream"
    from dfserve.errors import UsageError

    with pytest.raises(UsageError, match="colors"):
        ScoreOptions.from_json({"colors": "bt709"})


def test_8bit_terms_equal_swscale_for_every_sample(tmp_path):
    """The per-sample terms the torch path uses reproduce swscale's converter (through PyAV) for all 256 values
    of Y, U and V, limited and full range."""
    import av

    ys, us, vs = np.meshgrid(np.arange(256), np.arange(0, 256, 5), np.arange(0, 256, 5), indexing="ij")
    n = ys.size  # one 2x2 block per (Y, U, V): its four luma samples equal
    side = int(np.ceil(np.sqrt(n)))
    yb = np.zeros(side * side, np.uint8)
    ub = np.zeros_like(yb)
    vb = np.zeros_like(yb)
    yb[:n], ub[:n], vb[:n] = ys.ravel(), us.ravel(), vs.ravel()
    yb, ub, vb = (a.reshape(side, side) for a in (yb, ub, vb))
    luma = np.repeat(np.repeat(yb, 2, 0), 2, 1)
    for full in (False, True):
        planes = np.concatenate([luma, ub.reshape(-1, 2 * side), vb.reshape(-1, 2 * side)])
        f = av.VideoFrame.from_ndarray(planes, format="yuvj420p" if full else "yuv420p")
        got = frame_to_bgr(f)[::2, ::2].astype(int)
        t = seed_8bit_terms(full)
        y = t["y"][yb]
        want = np.stack([y + t["ub"][ub], y + t["ug"][ub] + t["vg"][vb], y + t["vr"][vb]], -1).clip(0, 255)
        assert np.array_equal(got, want)


@pytest.mark.parametrize("kind", ["bt709", "bt709 full range", "bt2020 hlg 10-bit", "untagged 12-bit"])
def test_torch_nv12_conversion_equals_the_cpu_frames(clips, kind):
    """NVDEC's NV12 / P016 are the decoded planes interleaved: built here from PyAV's, converted with torch on the
    CPU, they must give the CPU path's frames exactly."""
    torch = pytest.importorskip("torch")
    import av

    from dfserve.pipeline.frame_colours import _plane
    from dfserve.pipeline.gpu_colours import nv12_to_bgr

    c = _clip(clips, kind)
    with av.open(c["path"]) as con:
        for f in con.decode(video=0):
            bits = high_depth_420(f) or 8
            h, w = f.height, f.width
            dt = "<u2" if bits > 8 else "u1"
            shift = 16 - bits if bits > 8 else 0  # P016: the samples at the top of 16 bits
            y = _plane(f, 0, w, h, dt).astype(np.int32) << shift
            uv = np.stack([_plane(f, 1, w // 2, h // 2, dt), _plane(f, 2, w // 2, h // 2, dt)], -1).astype(np.int32)
            got = nv12_to_bgr(torch.from_numpy(y), torch.from_numpy(uv << shift), bits=bits,
                              full_range=f.format.name.startswith("yuvj"), msb_aligned=bits > 8)
            assert np.array_equal(got[0].numpy(), frame_to_bgr(f))


@pytest.mark.parametrize("fmt", ["yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv422p10le", "yuv444p10le", "gray"])
def test_other_pixel_formats_equal_opencvs(tmp_path, fmt):
    """4:2:2 (ProRes, broadcast), 4:4:4, full-range and grey frames, random samples through a rawvideo clip: PyAV's
    swscale with the seed rule gives OpenCV's frames (8-bit odd sizes too)."""
    import av

    rng = np.random.default_rng(len(fmt))
    deep = fmt.endswith("10le")
    top, dt = (1024, "<u2") if deep else (256, "u1")
    for w, h in ((64, 36), (65, 37)) if not deep else ((64, 36),):
        cw = w if "444" in fmt else (w + 1) // 2
        planes = [rng.integers(0, top, (h, w)).astype(dt)]
        if fmt != "gray":
            planes += [rng.integers(0, top, (h, cw)).astype(dt) for _ in range(2)]
        path = samples.write_raw_planes(tmp_path / f"{fmt}-{w}.nut", [tuple(planes)], fmt)["path"]
        with av.open(path) as con:
            ours = [frame_to_bgr(f) for f in con.decode(video=0)]
        assert _diff(ours, _opencv(path)) == (0, 0.0), (fmt, w, h)
