"""--faces all: every face, linked into tracks, a verdict per person, the video's from the most suspicious."""
import numpy as np
import pytest

from dfserve import samples, spec
from dfserve.pipeline.aggregate import verdict_from_logits
from dfserve.pipeline.decode import DecodeStats, iter_frames, probe
from dfserve.pipeline.detection import Detection, all_faces
from dfserve.pipeline.engine import ScoreOptions, Scorer
from dfserve.pipeline.faces import classifier_input, crop_faces, detector_input, faces_per_frame
from dfserve.pipeline.runtimes.ort import OnnxRuntime
from dfserve.pipeline.sampling import parse_policy
from dfserve.pipeline.tracking import IoUTracker, iou_matrix


@pytest.fixture(scope="module")
def runtime(exported):
    return OnnxRuntime(exported.out_dir)


@pytest.fixture(scope="session")
def multi_videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("multi face")
    two = samples.make_multi_face_video(  # two people whose paths cross (one row above the other)
        d / "two people.mp4", [{"who": "astronaut", "scale": 0.6, "start": (10, 0), "end": (470, 10)},
                               {"who": "cameraman", "scale": 0.6, "start": (490, 190), "end": (20, 180)}],
        n_frames=30)
    three = samples.make_multi_face_video(  # three people, the third leaves the frame two thirds in
        d / "three people.mp4", [{"who": "astronaut", "scale": 0.55, "start": (20, 0), "end": (500, 0)},
                                 {"who": "cameraman", "scale": 0.8, "start": (700, 170), "end": (100, 180)},
                                 {"who": "astronaut_mirrored", "scale": 0.5, "start": (500, 370), "end": (1100, 370)}],
        n_frames=40, width=960, height=540)
    crowd = samples.make_crowd_video(d / "crowd.mp4", rows=4, cols=5, n_frames=8)
    return {"two": two, "three": three, "crowd": crowd}


def _tracks(row):
    out = {}
    for e in row["timeline"]:
        if e[1] is not None:
            out.setdefault(e[3], []).append(e)
    return out


def test_tracker_keeps_identities_through_a_gap_and_a_crossing():
    t = IoUTracker(max_gap=2)
    a0, b0 = np.array([0, 0, 50, 50.]), np.array([200, 100, 250, 150.])
    ids = [t.update([a0, b0])]
    for k in range(1, 6):  # a moves right, b moves left, at different heights: their x ranges cross
        a, b = a0 + [20 * k, 0, 20 * k, 0], b0 - [20 * k, 0, 20 * k, 0]
        ids.append(t.update([b, a] if k != 3 else [b]))  # a is missed once (k=3), order shuffled
    assert ids[0] == [0, 1]
    assert [i for i in ids[1:]] == [[1, 0], [1, 0], [1], [1, 0], [1, 0]]
    assert t.update([np.array([900, 900, 950, 950.])]) == [2]  # someone new
    assert iou_matrix(a0, a0)[0, 0] == 1.0 and iou_matrix(a0, b0)[0, 0] == 0.0


def test_faces_per_frame_are_capped_and_filtered_by_size():
    faces = [Detection(np.array([0, 0, s, s], np.float32), 0.99) for s in range(5, 80)]
    got = all_faces(faces, min_size=20, limit=spec.MAX_FACES_PER_FRAME)
    assert len(got) == spec.MAX_FACES_PER_FRAME and got[0].area >= got[-1].area
    assert min(f.box[2] for f in got) >= 20


@pytest.mark.parametrize("name", ["two", "three"])
def test_tracks_are_found_stable_and_each_verdict_is_that_persons_own(runtime, multi_videos, name):
    v = multi_videos[name]
    opts = ScoreOptions(faces="all", timeline=True)
    row = next(Scorer(runtime, opts).score([v["path"]]))
    assert row["error"] is None, row["error"]
    people = v["people"]
    decisive = [f for f in row["faces"] if f["decisive"]]
    assert len(decisive) == len(people)
    tracks = _tracks(row)
    owner = {}
    for t, entries in tracks.items():  # every frame of a track is the same person: no identity swaps
        who = set()
        for i, _, box, _ in entries:
            # the boxes follow the seed's (dlib's) framing, tighter and squarer than the generator's face boxes:
            # IoU ~0.5 with the right person, ~0 with the others (seen 0.49 at the smallest faces)
            ious = [iou_matrix(box, p["boxes"][i])[0, 0] if p["boxes"][i] else 0.0 for p in people]
            assert max(ious) > 0.35 and sorted(ious)[-2:][0] < 0.1, (t, i, box, ious)
            who.add(int(np.argmax(ious)))
        assert len(who) == 1, (t, who)
        owner[t] = who.pop()
    for f in decisive:  # each person has one decisive track covering (nearly) all frames it is visible in
        visible = sum(b is not None for b in people[owner[f["track"]]]["boxes"])
        assert f["frames"] >= visible - 2
    assert sorted(owner[f["track"]] for f in decisive) == list(range(len(people)))
    # the person leaving the frame: their track ends where they leave
    if name == "three":
        leaver = next(f for f in decisive if owner[f["track"]] == 2)
        last_seen = max(i for i, b in enumerate(people[2]["boxes"]) if b is not None)
        assert abs(leaver["last_frame"] - last_seen) <= 2
    # each track's verdict equals scoring that person's crops alone: the test finds each person's face in
    # every frame itself (the detection nearest their ground-truth box), crops and classifies those
    info = probe(v["path"])
    crops = {k: [] for k in range(len(people))}
    for idx, fr in iter_frames(v["path"], parse_policy("all"), info, DecodeStats(), 16):
        x, scale = detector_input(fr, opts.detect_max_side)
        loc, scores, lm = runtime.detect(x)
        for i, f, dets in zip(idx, fr, faces_per_frame(loc, scores, x.shape[2], x.shape[3], scale, mode="all",
                                                        landmarks=lm)):
            for k, p in enumerate(people):
                if p["boxes"][i] is None or not dets:
                    continue
                ious = [iou_matrix(d.box, p["boxes"][i])[0, 0] for d in dets]
                if max(ious) > 0.35:  # the seed framing vs the generator's boxes (above)
                    crops[k].append(crop_faces([f], [dets[int(np.argmax(ious))].box])[0])
    for f in decisive:
        k = owner[f["track"]]
        assert len(crops[k]) == f["frames"]
        alone = verdict_from_logits(runtime.classify(classifier_input(np.stack(crops[k]))).astype(np.float64).mean(0))
        assert abs(alone.p_fake - f["p_fake"]) < 1e-4 and f["label"] == alone.label
        assert f["box_first"] == tracks[f["track"]][0][2]
    # the video's verdict is the most suspicious decisive person
    best = max(decisive, key=lambda f: f["p_fake"])
    assert row["decided_by"] == best["track"] and row["p_fake"] == best["p_fake"]
    assert row["frames_scored"] == best["frames"]


def test_a_crowd_of_twenty_faces(runtime, multi_videos):
    v = multi_videos["crowd"]
    opts = ScoreOptions(faces="all", detect_max_side=960, batch=32, chunk=4)
    row = next(Scorer(runtime, opts).score([v["path"]]))
    assert row["error"] is None
    assert len(row["faces"]) == 20 and all(f["frames"] == 8 for f in row["faces"])
    assert row["frames_with_face"] == 8


def test_largest_mode_is_unchanged_and_has_no_faces_field(runtime, multi_videos):
    v = multi_videos["two"]
    row = next(Scorer(runtime, ScoreOptions(faces="detect")).score([v["path"]]))
    assert "faces" not in row and row["frames_scored"] == 30
    with pytest.raises(Exception, match="--no-face frame"):
        ScoreOptions(faces="all", no_face="frame").validate()


def test_min_track_keeps_short_tracks_out_of_the_decision(runtime, multi_videos):
    v = multi_videos["three"]
    row = next(Scorer(runtime, ScoreOptions(faces="all", min_track=30)).score([v["path"]]))
    short = [f for f in row["faces"] if f["frames"] < 30]
    assert short and all(not f["decisive"] for f in short)
    assert row["decided_by"] not in {f["track"] for f in short}
