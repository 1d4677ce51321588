"""Every path that runs on the CPU gives the classifier the same bytes for the same boxes (issue 27): the
embedded Scorer's crop (onnxruntime and OpenVINO share it; so do web and Ray, through the Scorer), the
torch runtime's batched crop (the code the GPU runs), the Triton python model `face_crop` (cpu flavor),
and the seed reference used by export validation. Real encoded videos, one with a mid-file size change."""
import numpy as np
import pytest

from dfserve import spec
from dfserve.pipeline.decode import DecodeStats, iter_frames, probe
from dfserve.pipeline.engine import ScoreOptions, Scorer
from dfserve.pipeline.faces import choose_faces, classifier_input, crop_box, detector_input
from dfserve.pipeline.runtimes.ort import OnnxRuntime
from dfserve.pipeline.sampling import parse_policy

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def ort_runtime(exported):
    return OnnxRuntime(exported.out_dir)


@pytest.fixture(scope="module")
def torch_runtime(seed_model):
    from dfserve.pipeline.runtimes.torch_rt import TorchRuntime

    return TorchRuntime(seed_model, device="cpu")


def _runs(path):
    """(frames of one size, their indices) for every chunk of the video, all frames."""
    for idx, frames in iter_frames(path, parse_policy("every:1"), probe(path), DecodeStats(), 8):
        start = 0
        for k in range(1, len(frames) + 1):
            if k == len(frames) or frames[k].shape != frames[start].shape:
                yield frames[start:k]
                start = k


@pytest.mark.parametrize("video", ["face", "ts_360_720"])
def test_every_cpu_path_gives_the_classifier_the_same_bytes(video, videos, switch_videos, ort_runtime, torch_runtime):
    from dfserve.export.reference import seed_transform
    from dfserve.pipeline.gpu_scorer import TorchScorer
    from dfserve.serving.triton_models import FaceCrop

    path = videos[video]["path"] if video in videos else switch_videos[video]["path"]
    embedded = Scorer(ort_runtime, ScoreOptions())
    on_torch = TorchScorer(torch_runtime, ScoreOptions())
    face_crop = FaceCrop()
    face_crop.params, face_crop.cuda = {}, False
    face_crop.setup()
    sizes, n_faces = set(), 0
    for frames in _runs(path):
        sizes.add(frames[0].shape)
        x, scale = detector_input(frames)
        loc, scores, lm = ort_runtime.detect(x)
        boxes = [c.box if c is not None else None
                 for c in choose_faces(loc, scores, x.shape[2], x.shape[3], scale, landmarks=lm)]
        n_faces += sum(b is not None for b in boxes)
        want = classifier_input(np.stack(embedded.crop(frames, boxes)))  # what faces_to_logits classifies
        batch = torch.from_numpy(np.stack(frames))
        got_torch = torch.stack(on_torch.crop(list(batch.unbind(0)), boxes)).numpy()
        got_triton = face_crop.run({spec.T.FRAMES: np.stack(frames), spec.T.LOC: loc, spec.T.SCORES: scores,
                                    spec.T.LANDMARKS: lm})
        cut = [f if b is None else f[(t := crop_box(b, *f.shape[:2]))[0]:t[1], t[2]:t[3]] for f, b in zip(frames, boxes)]
        got_seed = seed_transform(cut).numpy()
        assert want.dtype == np.float32 and want.shape == (len(frames), 3, spec.FACE_SIZE, spec.FACE_SIZE)
        for name, got in (("torch", got_torch), ("triton face_crop", got_triton[spec.T.FACES]), ("seed", got_seed)):
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), f"{name} differs on {frames[0].shape}"
    assert n_faces > 0
    if video == "ts_360_720":
        assert len(sizes) == 2


def test_torch_scorer_scores_a_video_whose_size_changes(switch_videos, torch_runtime):
    """The torch path used to fail here ("all input arrays must have the same shape"): a decoded chunk
    spanning the size change is uploaded as one tensor per size."""
    from dfserve.pipeline.gpu_scorer import TorchScorer

    v = switch_videos["ts_360_720"]
    row = next(TorchScorer(torch_runtime, ScoreOptions(sample=parse_policy("every:1"))).score([v["path"]]))
    assert row["error"] is None, row["error"]
    assert row["frames_decoded"] == v["frames"] and row["frames_with_face"] == v["frames"]
