"""GPU-only code paths: they import lazily, say clearly what is missing, and their tests skip on CPU."""
import importlib.util
import subprocess
import sys

import pytest

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_tensorrt_missing_is_a_clear_message(exported):
    r = subprocess.run([sys.executable, "-m", "dfserve.cli", "export", "--tensorrt", "--models", str(exported.out_dir)],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "tensorrt" in r.stderr and "MissingDependencyError" in r.stderr


def test_device_cuda_without_a_gpu_is_a_clear_message(exported, videos):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    r = subprocess.run([sys.executable, "-m", "dfserve.cli", "score", videos["face"]["path"], "--models",
                        str(exported.out_dir), "--device", "cuda", "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 1 and "torch.cuda.is_available() is False" in r.stderr


def test_gpu_modules_import_without_cuda():
    import torch

    import dfserve.export.tensorrt_build  # noqa: F401
    import dfserve.pipeline.gpu_scorer as g

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    ok, why = g.nvdec_status()
    assert ok is False and g.nvdec_available() is False
    if importlib.util.find_spec("PyNvVideoCodec") is None:
        assert why.startswith("PyNvVideoCodec is not installed") and "pynvvideocodec==2.2.4" in why
    else:  # installed, but it needs a driver / a CUDA device
        assert "driver" in why or "torch.cuda.is_available() is False" in why


def test_crop_resize_by_index_is_the_same_as_cropping_the_selection():
    import numpy as np
    import torch

    from dfserve.pipeline.faces import classifier_input, crop_faces
    from dfserve.pipeline.runtimes.torch_rt import crop_resize

    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (5, 240, 320, 3), dtype=np.uint8)
    index = [3, 0, 3, 4]
    boxes = [np.array([30.4, 20.0, 90.6, 100.2]), None, np.array([5.0, 5.0, 6.0, 6.0]),  # too small: whole frame
             np.array([200.0, 100.0, 250.0, 140.0])]  # smaller than 112: enlarged
    t = torch.from_numpy(frames)
    got = crop_resize(t, boxes, margin=0.1, index=index).numpy()
    alone = crop_resize(t[index], boxes, margin=0.1).numpy()
    assert np.array_equal(got, alone)
    want = classifier_input(crop_faces([frames[i] for i in index], boxes, margin=0.1))
    grey = np.abs(want - got) * 255 * np.array([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
    assert grey.max() < 1.01 and grey.mean() < 0.05
    assert crop_resize(t[:2], [None, None], dtype=torch.float16).dtype == torch.float16


def test_as_batch_finds_the_decoded_batch_behind_frame_views():
    import torch

    from dfserve.pipeline.gpu_scorer import as_batch

    batch = torch.arange(4 * 2 * 3 * 3, dtype=torch.uint8).reshape(4, 2, 3, 3).clone()
    base, index = as_batch([batch[k] for k in (2, 0)])
    assert base is batch and index == [2, 0]
    base, index = as_batch(list(batch.unbind(0)))
    assert base is batch and index is None
    stacked, index = as_batch([batch[1], batch[1].clone()])  # not all views of one batch: one stack
    assert index is None and stacked.shape == (2, 2, 3, 3) and stacked.data_ptr() != batch.data_ptr()
    assert as_batch(batch) == (batch, None)


def test_torch_locate_matches_the_host_detection_path(seed_model):
    import numpy as np
    import torch

    from dfserve.pipeline.faces import faces_per_frame
    from dfserve.pipeline.runtimes.torch_rt import TorchRuntime
    from dfserve.samples import astronaut_bgr

    img = astronaut_bgr()
    frames = np.stack([img, img[:, ::-1].copy(), np.zeros_like(img)])
    rt = TorchRuntime(seed_model, device="cpu")
    t = torch.from_numpy(frames)
    # thresholding + box decoding on the device, NMS on the host; compared with the full outputs through
    # the CPU path's post-processing
    x, scale = rt.frames_to_detector(t, 320)
    loc, scores, lm = rt.detect_tensor(x)  # the full outputs through the CPU path's post-processing
    for mode in ("largest", "all"):
        got = rt.locate(t, max_side=320, mode=mode)
        want = faces_per_frame(loc.numpy(), scores.numpy(), x.shape[2], x.shape[3], scale, mode=mode, landmarks=lm.numpy())
        assert [len(g) for g in got] == [len(w) for w in want] and len(want[2]) == 0
        assert min(len(w) for w in want[:2]) == 1
        for gs, ws in zip(got, want):
            for g, w in zip(gs, ws):
                assert np.allclose(g.box, w.box, atol=1e-3) and abs(g.score - w.score) < 1e-6


@pytest.mark.gpu
def test_tensorrt_engines_match_onnxruntime(exported, tmp_path):
    pytest.importorskip("tensorrt")
    import shutil

    from dfserve.export.tensorrt_build import build_engines

    d = tmp_path / "models"
    shutil.copytree(exported.out_dir, d)
    report = build_engines(d, fp16=True)
    assert report["frame_classifier"]["max_abs_logit_error_vs_onnxruntime"] < 5e-2
    assert (d / "frame_classifier.plan").is_file() and (d / "face_detector.plan").is_file()


@pytest.mark.parametrize("rotation", [0, 90, -90, 180, 270])
def test_nvdec_frames_are_turned_upright_as_the_cpu_path_does(rotation):
    """NVDEC returns frames as coded; the GPU path applies the display rotation with the CPU path's rule."""
    import numpy as np
    import torch

    from dfserve.pipeline.decode import upright
    from dfserve.pipeline.gpu_scorer import upright_batch

    frames = np.random.default_rng(rotation % 360).integers(0, 255, (2, 6, 10, 3), dtype=np.uint8)
    got = upright_batch(torch.from_numpy(frames), rotation).numpy()
    assert np.array_equal(got, np.stack([upright(f, rotation) for f in frames]))
