"""The generated model repository: committed cpu configs regenerate byte for byte; all configs parse."""
from pathlib import Path

import pytest

from dfserve import spec
from dfserve.serving.repo import build_repo, config_text, model_names, parse_config

COMMITTED = Path(__file__).parent.parent / "model_repository"


def test_committed_cpu_repository_regenerates_identically(tmp_path):
    build_repo(tmp_path / "repo", "cpu")
    generated = sorted(p.relative_to(tmp_path / "repo") for p in (tmp_path / "repo").rglob("*") if p.is_file())
    committed = sorted(p.relative_to(COMMITTED) for p in COMMITTED.rglob("*") if p.is_file()
                       and p.name != ".gitignore" and p.suffix not in (".onnx", ".plan") and p.name != "model_info.json")
    assert generated == committed
    for rel in generated:
        assert (tmp_path / "repo" / rel).read_bytes() == (COMMITTED / rel).read_bytes(), rel


@pytest.mark.parametrize("flavor", ["cpu", "gpu"])
def test_every_config_parses_and_follows_the_spec(flavor):
    for name in model_names():
        c = parse_config(config_text(name, flavor))
        s = spec.MODELS[name]
        assert c.name == name and c.max_batch_size == s.max_batch_size
        assert [i.name for i in c.input] == list(s.input_names)
        assert [o.name for o in c.output] == list(s.output_names)
        if name == "deepfake_frames":
            assert c.platform == "ensemble" and len(c.ensemble_scheduling.step) == 4
    gpu_cls = parse_config(config_text("frame_classifier", "gpu"))
    assert gpu_cls.platform == "tensorrt_plan" and gpu_cls.instance_group[0].kind == gpu_cls.instance_group[0].KIND_GPU
    crop = parse_config(config_text("face_crop", "gpu"))
    assert crop.parameters["FORCE_CPU_ONLY_INPUT_TENSORS"].string_value == "no"


def test_ensemble_batch_limits_fit_its_steps():
    ens = parse_config(config_text("deepfake_frames", "cpu"))
    for st in ens.ensemble_scheduling.step:
        assert spec.MODELS[st.model_name].max_batch_size >= ens.max_batch_size


def test_aggregator_is_stateful():
    c = parse_config(config_text("video_aggregator", "cpu"))
    assert c.sequence_batching.max_sequence_idle_microseconds > 0
    assert all(i.allow_ragged_batch for i in c.input)
