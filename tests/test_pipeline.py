"""The embedded pipeline on real encoded videos made by the tests."""
import numpy as np
import pytest

from dfserve import spec
from dfserve.errors import UsageError
from dfserve.pipeline.decode import DecodeStats, find_videos, iter_frames, probe
from dfserve.pipeline.engine import ScoreOptions, Scorer
from dfserve.pipeline.runtimes.ort import OnnxRuntime
from dfserve.pipeline.sampling import parse_policy


@pytest.fixture(scope="module")
def runtime(exported):
    return OnnxRuntime(exported.out_dir)


def _decoded_indices(path, policy):
    info = probe(path, count_if_unknown=True)
    stats = DecodeStats()
    idx = [i for chunk, _ in iter_frames(path, parse_policy(policy), info, stats, chunk=7) for i in chunk]
    return idx, stats


@pytest.mark.parametrize("policy,expected", [
    ("all", list(range(45))),
    ("every:4", list(range(0, 45, 4))),
    ("fps:10", list(range(0, 45, 3))),
    ("fps:60", list(range(45))),
    ("uniform:5", [0, 11, 22, 33, 44]),
    ("uniform:100", list(range(45))),
    ("first:10", list(range(10))),
])
def test_sampling_policies(videos, policy, expected):
    idx, stats = _decoded_indices(videos["face"]["path"], policy)
    assert idx == expected
    if policy == "first:10":
        assert stats.frames_decoded == 10  # decoding stops early


@pytest.mark.parametrize("bad", ["sometimes", "every:0", "every:x", "fps:-1", "all:3", "uniform:"])
def test_bad_policies_are_usage_errors(bad):
    with pytest.raises(UsageError, match="--sample"):
        parse_policy(bad)


def test_probe_and_frame_format(videos):
    for key in ("face", "hevc"):
        v = videos[key]
        info = probe(v["path"])
        assert (info.width, info.height, info.n_frames) == (v["width"], v["height"], v["frames"])
        assert info.codec == {"h264": "h264", "hevc": "hevc"}[v["codec"]]
        _, frames = next(iter_frames(v["path"], parse_policy("first:1"), info, DecodeStats()))
        assert frames[0].dtype == np.uint8 and frames[0].shape == (v["height"], v["width"], 3)


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("key", ["face", "hevc"])
def test_face_boxes_follow_the_moving_face(runtime, videos, key):
    v = videos[key]
    row = next(Scorer(runtime, ScoreOptions(timeline=True)).score([v["path"]]))
    assert row["error"] is None and row["frames_scored"] == v["frames"] == row["frames_with_face"]
    assert [t[0] for t in row["timeline"]] == list(range(v["frames"]))
    ious = [_iou(t[2], gt) for t, gt in zip(row["timeline"], v["boxes"])]
    assert min(ious) > 0.6, ious
    centres = np.array([[(t[2][0] + t[2][2]) / 2, (t[2][1] + t[2][3]) / 2] for t in row["timeline"]])
    assert centres[-1, 0] - centres[0, 0] > v["width"] * 0.3  # it moved left to right


@pytest.mark.parametrize("head", spec.HEADS)
def test_precropped_first_n_matches_seed_reference(runtime, seed_model, videos, head):
    import av

    from dfserve.export.reference import SeedReference

    n = 20
    path = videos["precropped"]["path"]
    with av.open(path) as c:
        frames = [f.to_ndarray(format="bgr24") for _, f in zip(range(n), c.decode(video=0))]
    seed = SeedReference(seed_model).predict_frames(frames, head)
    opts = ScoreOptions(sample=parse_policy(f"first:{n}"), faces="precropped", head=head, batch=8)
    row = next(Scorer(runtime, opts).score([path]))
    assert row["frames_scored"] == n
    assert abs(row["p_fake"] - seed.p_fake) <= 1e-3
    assert row["label"] == seed.label


def test_tagged_precropped_clip_matches_seed_reference_on_opencv_frames(runtime, seed_model, tmp_path):
    """The seed read a BT.709-tagged phone clip with cv2.VideoCapture (BT.601 colours): dfserve's verdict on the
    same clip equals the seed's forward on OpenCV's frames."""
    pytest.importorskip("cv2")
    from dfserve import samples
    from dfserve.bench.seed_pipeline import opencv_frames
    from dfserve.export.reference import SeedReference

    n = 8
    crops = samples.astronaut_face_crops(n, seed=3)
    clip = samples.make_colour_clip(tmp_path / "bt709 faces.mp4", "bt709", frames=crops)
    seed = SeedReference(seed_model).predict_frames(list(opencv_frames(clip["path"])), "mean")
    row = next(Scorer(runtime, ScoreOptions(sample=parse_policy(f"first:{n}"), faces="precropped")).score([clip["path"]]))
    assert row["frames_scored"] == n and row["colors"] == "seed"
    assert abs(row["p_fake"] - seed.p_fake) <= 1e-3


def test_bad_files_become_rows_and_the_batch_goes_on(runtime, videos):
    keys = ["corrupt", "empty", "text", "face", "truncated", "noface"]
    paths = [videos[k]["path"] for k in keys] + [str(videos["dir"] / "missing.mp4")]
    rows = {r["path"]: r for r in Scorer(runtime, ScoreOptions(sample=parse_policy("every:3"))).score(paths)}
    assert set(rows) == set(paths)
    for k in ("corrupt", "empty", "text"):
        err = rows[videos[k]["path"]]["error"]
        assert err["type"] == "VideoError" and videos[k]["path"] in err["message"]
        assert rows[videos[k]["path"]]["label"] is None
    assert "empty" in rows[videos["empty"]["path"]]["error"]["message"]
    assert "no such file" in rows[str(videos["dir"] / "missing.mp4")]["error"]["message"]
    good = rows[videos["face"]["path"]]
    assert good["error"] is None and good["label"] in ("FAKE", "REAL") and good["frames_scored"] == 15
    # half an mp4 whose index (moov) is at the end: nothing can be located, a clear error naming the file
    trunc = rows[videos["truncated"]["path"]]
    assert trunc["error"]["type"] == "VideoError" and videos["truncated"]["path"] in trunc["error"]["message"]
    assert trunc["label"] is None and trunc["frames_scored"] == 0
    nf = rows[videos["noface"]["path"]]
    assert nf["label"] is None and nf["error"]["type"] == "NoFaceError" and nf["frames_with_face"] == 0


def test_no_face_frame_mode_classifies_whole_frames(runtime, videos):
    row = next(Scorer(runtime, ScoreOptions(no_face="frame")).score([videos["noface"]["path"]]))
    assert row["error"] is None and row["label"] in ("FAKE", "REAL")
    assert row["frames_scored"] == 12 and row["frames_with_face"] == 0


def test_batches_mix_videos_and_results_do_not_depend_on_batching(runtime, videos):
    paths = [videos["face"]["path"], videos["hevc"]["path"], videos["precropped"]["path"]]
    a = {r["path"]: r for r in Scorer(runtime, ScoreOptions(batch=64, decode_workers=3)).score(paths)}
    b = {r["path"]: r for r in Scorer(runtime, ScoreOptions(batch=5, decode_workers=1)).score(paths)}
    for p in paths:
        assert a[p]["frames_scored"] == b[p]["frames_scored"]
        assert abs(a[p]["p_fake"] - b[p]["p_fake"]) < 1e-5


def test_last_head_uses_the_last_frame(runtime, videos):
    opts = ScoreOptions(head="last", timeline=True, sample=parse_policy("every:5"))
    row = next(Scorer(runtime, opts).score([videos["face"]["path"]]))
    last = row["timeline"][-1]
    assert last[0] == 40 and abs(last[1] - row["p_fake"]) < 1e-5


def test_find_videos(videos, tmp_path):
    found = find_videos([str(videos["dir"])])
    assert videos["face"]["path"] in found and videos["hevc"]["path"] in found
    lst = tmp_path / "list.txt"
    lst.write_text(f"# comment\n{videos['face']['path']}\n\n{videos['noface']['path']}\n")
    assert find_videos([f"@{lst}"]) == [videos["face"]["path"], videos["noface"]["path"]]


def test_absurd_frame_size_is_refused_by_name(runtime, tmp_path):
    from dfserve.samples import write_video

    p = tmp_path / "too wide.mp4"
    write_video(p, [np.zeros((16, 8256, 3), np.uint8)] * 2)
    row = next(Scorer(runtime, ScoreOptions()).score([str(p)]))
    assert row["error"]["type"] == "VideoError" and "absurd frame size 8256x16" in row["error"]["message"]
    assert str(p) in row["error"]["message"]


def test_overlapped_stages_give_the_rows_of_the_serial_loop(runtime, videos):
    """Detection in the locate thread while the calling thread classifies: the same rows, good and bad files
    alike, as with both stages in one thread, and no thread left behind."""
    import threading

    keys = ["face", "corrupt", "hevc", "noface", "precropped", "truncated"]
    paths = [videos[k]["path"] for k in keys]
    rows = {}
    for overlap in (True, False):
        sc = Scorer(runtime, ScoreOptions(batch=5, chunk=4, timeline=True))
        sc.overlap = overlap
        rows[overlap] = {r["path"]: r for r in sc.score(paths)}
    assert set(rows[True]) == set(paths)
    for p in paths:
        a, b = rows[True][p], rows[False][p]
        assert (a["error"] or {}).get("type") == (b["error"] or {}).get("type")
        assert a["frames_scored"] == b["frames_scored"] and a["frames_with_face"] == b["frames_with_face"]
        assert a["label"] == b["label"]
        if a["p_fake"] is not None:
            assert abs(a["p_fake"] - b["p_fake"]) < 1e-6
            assert [t[0] for t in a["timeline"]] == [t[0] for t in b["timeline"]]
    assert rows[True][videos["face"]["path"]]["frames_scored"] == 45
    # a caller that stops reading early stops the decode and locate threads
    it = Scorer(runtime, ScoreOptions(chunk=4)).score([videos["face"]["path"], videos["hevc"]["path"]])
    next(it)
    it.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("dfserve-decode") and t.is_alive()]
    # the locate workers ran on the runtime's pool (engine.locate_pool): their tasks ended with the call, the
    # pool's threads stay for the next call, which reuses them
    pool = runtime._dfserve_locate_pool
    before = {t.ident for t in threading.enumerate() if t.name.startswith("dfserve-locate-pool")}
    assert pool._work_queue.qsize() == 0
    assert next(Scorer(runtime, ScoreOptions(chunk=4)).score([videos["hevc"]["path"]]))["error"] is None
    assert {t.ident for t in threading.enumerate() if t.name.startswith("dfserve-locate-pool")} == before
