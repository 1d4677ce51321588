"""The gpu flavor on a real tritonserver with a GPU: python-backend models in torch fp16 on the GPU.

Skipped without CUDA (the `gpu` mark); benchmarks/gpu/run.sh runs it on the GPU machine. The CPU suite
checks the same repository's configs (tests/test_repo.py) and the cpu flavor on a real server.
"""
import numpy as np
import pytest

from dfserve.pipeline.engine import ScoreOptions, Scorer
from dfserve.pipeline.runtimes.ort import OnnxRuntime
from dfserve.pipeline.sampling import parse_policy

pytestmark = [pytest.mark.gpu, pytest.mark.triton]

# fp16 against the fp32 CPU path on the suite's seeded weights: logits move by up to ~0.2 (measured on an
# H200, tests/test_torch_runtime.py), a whole-video p_fake by a few hundredths at most
P_FAKE_TOL_FP16 = 0.05


@pytest.fixture(scope="module")
def gpu_server(exported, tmp_path_factory):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from dfserve.serving.repo import build_repo
    from dfserve.serving.server import TritonServer

    repo = build_repo(tmp_path_factory.mktemp("gpu repo"), "gpu", exported.out_dir)
    with TritonServer(repo, startup_timeout=300) as srv:
        yield srv


def test_whole_video_on_the_gpu_matches_the_cpu_path(gpu_server, exported, videos):
    from dfserve.client import DeepfakeClient

    p = videos["face"]["path"]
    e = next(Scorer(OnnxRuntime(exported.out_dir), ScoreOptions(sample=parse_policy("every:2"))).score([p]))
    with DeepfakeClient(gpu_server.grpc_url) as c:
        row = c.score_video(p, sample="every:2")
    assert row["error"] is None and row["frames_scored"] == e["frames_scored"]
    assert row["frames_with_face"] == e["frames_with_face"]
    assert abs(row["p_fake"] - e["p_fake"]) <= P_FAKE_TOL_FP16, (row["p_fake"], e["p_fake"])


def test_cuda_shared_memory_frames_equal_host_frames(gpu_server, videos):
    import av
    import torch

    from dfserve.client import DeepfakeClient

    with av.open(videos["face"]["path"]) as cont:
        frames = np.stack([f.to_ndarray(format="bgr24") for _, f in zip(range(8), cont.decode(video=0))])
    with DeepfakeClient(gpu_server.grpc_url, shared_memory=False) as c:
        host = c.infer_frames(frames)
    with DeepfakeClient(gpu_server.grpc_url, shared_memory="cuda") as c:
        dev = c.infer_frames(torch.from_numpy(frames).cuda())
    assert np.array_equal(host.has_face, dev.has_face) and host.has_face.any()
    assert np.allclose(host.boxes, dev.boxes) and np.allclose(host.logits, dev.logits, atol=1e-3)
