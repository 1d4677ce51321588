"""A frame size that changes mid-stream (broadcast captures): each size gets its own detector scale,
and the verdict equals scoring the two segments as separate files."""
import numpy as np
import pytest

from dfserve.pipeline.chunk import FrameRecord, VideoTally, same_size_runs
from dfserve.pipeline.engine import ScoreOptions, Scorer
from dfserve.pipeline.runtimes.ort import OnnxRuntime


@pytest.fixture(scope="module")
def runtime(exported):
    return OnnxRuntime(exported.out_dir)


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_same_size_runs_split_where_the_size_changes():
    frames = [np.zeros((4, 6, 3)), np.zeros((4, 6, 3)), np.zeros((8, 12, 3)), np.zeros((4, 6, 3))]
    runs = list(same_size_runs([10, 11, 12, 13], frames))
    assert [r[0] for r in runs] == [[10, 11], [12], [13]]
    assert [len(r[1]) for r in runs] == [2, 1, 1]


def test_tally_counts_only_classified_faces_and_keeps_the_timeline():
    t = VideoTally("mean", "skip", timeline=True)
    recs = [FrameRecord(0, True, np.array([1, 2, 3, 4], np.float32), np.array([2.0, 0.0], np.float32)),
            FrameRecord(1, False, None, np.array([-9.0, 9.0], np.float32)),  # no face: left out
            FrameRecord(2, True, np.array([1, 2, 3, 4], np.float32), np.array([0.0, 2.0], np.float32))]
    t.add(recs)
    verdict, n = t.finish()
    assert n == 2 and abs(verdict.p_fake - 0.5) < 1e-9  # mean of (2,0) and (0,2)
    assert t.frames_sampled == 3 and t.frames_with_face == 2
    assert [e[0] for e in t.sorted_timeline()] == [0, 1, 2] and t.sorted_timeline()[1][1] is None


@pytest.mark.parametrize("name", ["ts_360_720", "ts_720_1080"])
def test_embedded_scorer_handles_a_size_change(runtime, switch_videos, name):
    v = switch_videos[name]
    opts = ScoreOptions(timeline=True)
    row = next(Scorer(runtime, opts).score([v["path"]]))
    assert row["error"] is None, row["error"]
    assert row["frames_decoded"] == v["frames"] and row["frames_with_face"] == v["frames"]
    segs = [next(Scorer(runtime, ScoreOptions(timeline=True)).score([s["path"]])) for s in v["segments"]]
    # every frame's face box is right at its own resolution (one detector scale per size)
    truth = [b for s in v["segments"] for b in s["boxes"]]
    for (i, p, box), gt in zip(row["timeline"], truth):
        assert box is not None and _iou(box, gt) > 0.6, (i, box, gt)
    # and each frame scores exactly as in its own segment file
    n0 = v["segments"][0]["frames"]
    joined = segs[0]["timeline"] + [[i + n0, p, b] for i, p, b in segs[1]["timeline"]]
    assert [t[0] for t in row["timeline"]] == [t[0] for t in joined]
    assert np.allclose([t[1] for t in row["timeline"]], [t[1] for t in joined], atol=1e-6)
    assert np.allclose([t[2] for t in row["timeline"]], [t[2] for t in joined], atol=1e-3)
    # the mean head over the whole stream is the mean of every frame's logits across both sizes:
    # p_fake = sigmoid(mean_t logit(p_t)) for two classes
    pf = np.clip([t[1] for t in joined], 1e-6, 1 - 1e-6)
    expect = 1.0 / (1.0 + np.exp(-np.mean(np.log(pf / (1 - pf)))))
    assert row["frames_scored"] == segs[0]["frames_scored"] + segs[1]["frames_scored"]
    assert abs(row["p_fake"] - expect) < 1e-3


def test_probe_counts_every_segment_of_a_concatenated_ts(tmp_path):
    """Issue 25: each TS segment restarts its clock, so the declared duration covers the first segment only;
    probe counts the packets of the whole file (uniform / first-N sampling and progress rely on it)."""
    from dfserve import samples
    from dfserve.pipeline.decode import probe

    v = samples.make_resolution_switch_video(tmp_path / "three segments.ts", sizes=((160, 96), (320, 180), (160, 96)),
                                             n_each=10)
    info = probe(v["path"])
    assert info.container == "mpegts" and info.n_frames == 30 and abs(info.duration_s - 1.0) < 0.05
    seg = samples.make_face_video(tmp_path / "one.ts", n_frames=10, width=160, height=96)
    assert probe(seg["path"]).n_frames == 10
