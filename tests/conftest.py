"""Shared fixtures: seeded random seed-format checkpoints and one export per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def seed_model():
    from dfserve.export.checkpoint import random_seed_model

    return random_seed_model(seed=1234)


@pytest.fixture(scope="session")
def checkpoint_path(tmp_path_factory, seed_model):
    """A seed-format plain state dict, in a folder whose name has a space in it."""
    from dfserve.export.checkpoint import save_seed_checkpoint

    d = tmp_path_factory.mktemp("check points")
    return save_seed_checkpoint(seed_model, d / "model_93_acc_100_frames_final_data.pt")


@pytest.fixture(scope="session")
def exported(tmp_path_factory, checkpoint_path):
    """One validated export of the session checkpoint (frame_classifier + face_detector ONNX)."""
    from dfserve.export.onnx_export import export_models

    out = tmp_path_factory.mktemp("models dir")
    return export_models(out, checkpoint=checkpoint_path)
