"""The gpu flavor's `deepfake_video` scores a whole video in its own instance with the engine's TorchScorer
(triton_models.DeepfakeVideo, `scorer` parameter "torch"). On the GPU tests/test_triton_gpu.py runs it on a
real tritonserver; here the same model class runs on the CPU torch runtime, from the repository `dfserve repo
build --flavor gpu` writes: its row equals the embedded torch scorer's, names the client's file, and a request
over a limit is refused as the cpu flavor refuses it."""
import json

import numpy as np
import pytest

from dfserve.errors import RequestLimitError
from dfserve.spec import T


@pytest.fixture(scope="module")
def video_model(exported, tmp_path_factory):
    import torch

    from dfserve.serving.repo import build_repo
    from dfserve.serving.triton_models import DeepfakeVideo

    repo = build_repo(tmp_path_factory.mktemp("gpu repo"), "gpu", exported.out_dir)
    vdir = repo / "deepfake_video" / "1"
    m = DeepfakeVideo.__new__(DeepfakeVideo)  # what initialize() sets, without a python backend around it
    m.version_dir, m.cuda, m.device = vdir, False, torch.device("cpu")
    m.params = {"max_frames": "40", "precision": "fp32"}
    m.setup()
    assert m.rt is None  # not on a GPU: the BLS path
    m._setup_torch()
    return m


def _ask(model, path, **opts):
    data = open(path, "rb").read()
    out = model.run({T.VIDEO: np.array([data], dtype=np.object_),
                     T.OPTIONS: np.array([json.dumps(opts).encode()], dtype=np.object_)})
    return json.loads(out[T.RESULT][0])


def test_whole_video_in_the_instance_equals_the_embedded_torch_scorer(video_model, videos):
    from dfserve.pipeline.gpu_scorer import TorchScorer
    from dfserve.pipeline.options import ScoreOptions
    from dfserve.pipeline.sampling import parse_policy

    p = videos["hevc"]["path"]  # 30 frames, under the 40 allowed
    row = _ask(video_model, p, sample="every:3", name="client clip.mp4")
    want = next(TorchScorer(video_model.rt, ScoreOptions(sample=parse_policy("every:3"))).score([p]))
    assert row["error"] is None and row["path"] == "client clip.mp4"
    assert row["frames_scored"] == want["frames_scored"] == 10 and row["p_fake"] == want["p_fake"]


def test_a_request_over_a_limit_is_refused_naming_the_clients_file(video_model, videos):
    with pytest.raises(RequestLimitError, match="client clip.mp4") as e:
        _ask(video_model, videos["face"]["path"], sample="all", name="client clip.mp4")  # 45 frames > 40
    assert e.value.limit == "max_frames" and "/tmp" not in str(e.value)
    row = _ask(video_model, videos["text"]["path"], name="notes.mov")  # a bad file is a row, not a refusal
    assert row["error"] and row["path"] == "notes.mov"
