"""`dfserve doctor` on this machine (a CPU-only CI box): a real run of the command, facts asserted."""
import importlib.util
import json
import shutil
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def facts():
    import torch

    if torch.cuda.is_available():
        pytest.skip("these assertions describe a machine without a GPU")
    r = subprocess.run([sys.executable, "-m", "dfserve.cli", "doctor", "--json"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_doctor_sees_no_gpu_and_says_why(facts):
    assert facts["torch"]["installed"] and facts["torch"]["cuda_available"] is False
    assert facts["torch"]["devices"] == []
    assert facts["torch"]["reason"]
    assert facts["nvidia_smi"]["found"] is (shutil.which("nvidia-smi") is not None)
    if not facts["nvidia_smi"]["found"]:
        assert "not on PATH" in facts["nvidia_smi"]["reason"]
    nv = facts["nvdec"]
    assert nv["available"] is False and "decode_test" not in nv
    if importlib.util.find_spec("PyNvVideoCodec") is None:
        assert "PyNvVideoCodec is not installed" in nv["reason"]
    assert facts["tensorrt"]["installed"] is (importlib.util.find_spec("tensorrt") is not None)


def test_doctor_lists_runtimes_and_tritonserver(facts):
    assert "CPUExecutionProvider" in facts["onnxruntime"]["providers"]
    assert "CUDAExecutionProvider" not in facts["onnxruntime"]["providers"]
    if importlib.util.find_spec("openvino") is not None:
        assert facts["openvino"]["installed"] and "CPU" in facts["openvino"]["devices"]
    if importlib.util.find_spec("pytriton") is not None and shutil.which("tritonserver") is None:
        servers = facts["triton"]["servers"]
        assert [s["source"] for s in servers] == ["nvidia-pytriton"]
        assert servers[0]["backends"] == ["python"] and servers[0]["python_stub"]
        assert facts["triton"]["used_by_serve"] == "nvidia-pytriton"


def test_doctor_says_what_works_here(facts):
    w = facts["works"]
    assert w["score --device cpu"]["ok"] is True
    assert w["score --device cpu --runtime torch"]["ok"] is True
    assert w["score --device cuda"]["ok"] is False
    assert "torch.cuda.is_available() is False" in w["score --device cuda"]["why"]
    assert w["score --device cuda (NVDEC decode)"]["ok"] is False
    for k in ("export --tensorrt", "export --tensorrt --fp16", "export --tensorrt --int8"):
        assert w[k]["ok"] is False and "tensorrt" in w[k]["why"].lower()
    assert w["serve (gpu flavor)"]["ok"] is False and w["serve (gpu-tensorrt flavor)"]["ok"] is False
    assert w["client shared_memory='cuda'"]["ok"] is False
    if importlib.util.find_spec("pytriton") is not None:
        assert w["serve (cpu flavor)"]["ok"] is True
        assert w["repo build --flavor cpu"]["ok"] is True


def test_doctor_text_report(facts):
    from dfserve.doctor import render

    text = render(facts)
    assert "What will work here:" in text
    assert "[yes] dfserve score --device cpu " in text
    assert "[ no] dfserve score --device cuda " in text
    assert "NVDEC          no:" in text


def test_what_works_on_a_described_gpu_box():
    """The mapping from facts to options, for a GPU machine this CI cannot be: H100, NVDEC, TensorRT 11."""
    from dfserve.doctor import what_works

    f = {"torch": {"installed": True, "version": "2.11.0+cu130", "cuda_available": True,
                   "devices": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}]},
         "nvdec": {"available": True, "reason": "PyNvVideoCodec 2.2.4 with CUDA device 0"},
         "tensorrt": {"installed": True, "version": "11.1.0", "fp16_flag": False, "int8_calibrator": False},
         "onnxruntime": {"installed": True, "providers": ["CPUExecutionProvider"]},
         "openvino": {"installed": False, "devices": [], "reason": "openvino is not installed"},
         "triton": {"servers": [{"source": "PATH", "backends": ["python", "tensorrt"]}],
                    "client": {"installed": True}},
         "cuda_shared_memory": {"available": True, "reason": "ok"},
         "score_runtime_choices": ["auto", "onnxruntime", "torch"]}
    w = what_works(f)
    assert w["score --device cuda"]["ok"] and "NVDEC" in w["score --device cuda"]["why"]
    assert w["export --tensorrt"]["ok"] is True
    assert w["export --tensorrt --fp16"]["ok"] is False and "strongly typed" in w["export --tensorrt --fp16"]["why"]
    assert w["export --tensorrt --int8"]["ok"] is False
    assert w["serve (gpu flavor)"]["ok"] is True  # python backend + CUDA torch
    assert w["serve (gpu-tensorrt flavor)"]["ok"] is True
    assert w["client shared_memory='cuda'"]["ok"] is True


def test_a_missing_parent_package_is_a_fact_not_a_crash():
    """Seen on the GPU machine (no tritonclient there): find_spec('tritonclient.grpc') raised and the
    doctor died before printing anything."""
    from dfserve.doctor import _import

    mod, why = _import("dfserve_no_such_package.grpc")
    assert mod is None and why == "dfserve_no_such_package is not installed"
