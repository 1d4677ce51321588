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
