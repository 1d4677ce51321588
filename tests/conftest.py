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
        if item.get_closest_marker("gpu") is not None and not has_cuda:
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


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
    """Generated test videos (real face pixels) with ground truth, in a folder with a space in its name."""
    from dfserve import samples

    d = tmp_path_factory.mktemp("sample videos") / "with space"
    d.mkdir()
    v = {
        "face": samples.make_face_video(d / "face h264.mp4", n_frames=45, width=640, height=360, codec="h264"),
        "hevc": samples.make_face_video(d / "face hevc.mkv", n_frames=30, width=480, height=272, codec="hevc",
                                        seed=2, zoom=(0.6, 1.3)),
        "noface": samples.make_noface_video(d / "noface.mp4", n_frames=12),
        "precropped": samples.make_precropped_video(d / "precropped.mp4", n_frames=24),
        "corrupt": samples.make_corrupt_file(d / "corrupt.mp4"),
    }
    data = (d / "face h264.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])
    v["truncated"] = {"path": str(d / "truncated.mp4")}
    (d / "empty.mp4").write_bytes(b"")
    v["empty"] = {"path": str(d / "empty.mp4")}
    (d / "notes.mov").write_text("this is not a video\n")
    v["text"] = {"path": str(d / "notes.mov")}
    v["dir"] = d
    return v


@pytest.fixture(scope="session")
def switch_videos(tmp_path_factory):
    """MPEG-TS files whose frame size changes mid-stream, with each segment also as its own file."""
    from dfserve import samples

    d = tmp_path_factory.mktemp("size switch")
    out = {}
    for name, sizes, n in (("ts_360_720", ((640, 360), (1280, 720)), 10), ("ts_720_1080", ((1280, 720), (1920, 1080)), 6)):
        seg = d / name
        seg.mkdir()
        out[name] = samples.make_resolution_switch_video(d / f"{name}.ts", sizes=sizes, n_each=n, segments_dir=seg)
    return out
