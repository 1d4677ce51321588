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
    import dfserve.export.tensorrt_build  # noqa: F401
    import dfserve.pipeline.gpu_scorer as g

    assert g.nvdec_available() in (True, False)


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
