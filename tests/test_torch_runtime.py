"""The torch runtime (the GPU path's code) against onnxruntime: one test body, parametrized over device.

On CPU it runs fp32 and checks the logic CI can check; on CUDA (marker gpu) fp16 + CUDA graphs +
NVDEC. The issue's bar of 1e-2 in p_fake is checked per video by benchmarks/gpu (stage agreement).
"""
import numpy as np
import pytest

from dfserve.pipeline.engine import ScoreOptions, Scorer
from dfserve.pipeline.runtimes.ort import OnnxRuntime
from dfserve.pipeline.sampling import parse_policy

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture(scope="module")
def ort_runtime(exported):
    return OnnxRuntime(exported.out_dir)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_scorer_agrees_with_onnxruntime(device, seed_model, ort_runtime, videos):
    from dfserve.pipeline.gpu_scorer import TorchScorer
    from dfserve.pipeline.runtimes.torch_rt import TorchRuntime

    rt = TorchRuntime(seed_model, device=device)
    paths = [videos[k]["path"] for k in ("face", "hevc", "noface", "corrupt")]
    opts = dict(sample=parse_policy("every:3"), timeline=True)
    want = {r["path"]: r for r in Scorer(ort_runtime, ScoreOptions(**opts)).score(paths)}
    got = {r["path"]: r for r in TorchScorer(rt, ScoreOptions(**opts)).score(paths)}
    for p in paths:
        w, g = want[p], got[p]
        assert (w["error"] or {}).get("type") == (g["error"] or {}).get("type")
        assert w["frames_scored"] == g["frames_scored"]
        if w["p_fake"] is not None:
            # the crops are bit-exact for equal boxes (test below), but the torch detector's boxes differ from
            # onnxruntime's by up to ~2 px, and the seeded random weights are chaotic: a 1 px shift of a crop
            # moves its p_fake by ~0.1. So the video verdicts are compared loosely here; the parts tightly below.
            # (The bar for fp16 on the GPU, 1e-2, needs trained weights and a GPU to check.)
            assert abs(w["p_fake"] - g["p_fake"]) < 0.1
            for a, b in zip(w["timeline"], g["timeline"]):
                assert (a[2] is None) == (b[2] is None)
                if a[2] is not None:
                    # boxes, pixels; on the GPU the detector runs in fp16 on NVDEC's colour conversion:
                    # seen on an H200, 2.6 px on a 94x122 px face
                    assert np.allclose(a[2], b[2], atol=2.0 if device == "cpu" else 4.0)


@pytest.mark.parametrize("device", DEVICES)
def test_crop_resize_gives_the_cpu_paths_bytes(device):
    import torch

    from dfserve.pipeline.faces import classifier_input, crop_faces
    from dfserve.pipeline.runtimes.torch_rt import crop_resize

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 300, 420, 3), dtype=np.uint8)
    boxes = [np.array([10.2, 20.7, 60.1, 80.4]), None, np.array([100.0, 30.0, 400.0, 290.0])]
    want = classifier_input(crop_faces(list(frames), boxes))
    got = crop_resize(torch.from_numpy(frames).to(device), boxes).cpu().numpy()
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


@pytest.mark.parametrize("device", DEVICES)
def test_classifier_matches_onnx_per_frame(device, seed_model, ort_runtime):
    from dfserve.pipeline.runtimes.torch_rt import TorchRuntime
    from dfserve.samples import astronaut_face_crops, normalize_faces

    faces = normalize_faces(astronaut_face_crops(40, seed=5))
    rt = TorchRuntime(seed_model, device=device)
    # fp16 on the GPU: with these chaotic random weights fp16 arithmetic itself moves logits by up to
    # ~0.2 (0.198 when the same model runs in fp16 on the CPU, 0.177 seen on an H200); bf16, 1.14
    tol = 0.25 if device == "cuda" else 1e-3
    assert np.abs(rt.classify(faces) - ort_runtime.classify(faces)).max() < tol


@pytest.mark.gpu
def test_nvdec_decodes_the_same_frames_as_pyav(videos):
    pytest.importorskip("PyNvVideoCodec")
    from dfserve.pipeline.decode import DecodeStats, iter_frames, probe
    from dfserve.pipeline.gpu_scorer import iter_frames_nvdec

    for key in ("face", "hevc"):
        p = videos[key]["path"]
        info = probe(p)
        for policy in ("all", "uniform:5", "first:7"):
            cpu = [(i, f) for idx, fr in iter_frames(p, parse_policy(policy), info, DecodeStats()) for i, f in zip(idx, fr)]
            gpu = [(i, f) for idx, fr in iter_frames_nvdec(p, parse_policy(policy), info, DecodeStats())
                   for i, f in zip(idx, fr)]
            assert [i for i, _ in cpu] == [i for i, _ in gpu]
            diff = np.abs(cpu[0][1].astype(int) - gpu[0][1].cpu().numpy().astype(int)).mean()
            assert diff < 3  # colour conversion differs slightly between FFmpeg and NVDEC
