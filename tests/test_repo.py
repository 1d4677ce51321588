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


@pytest.mark.parametrize("flavor", spec.REPO_FLAVORS)
def test_every_config_parses_and_follows_the_spec(flavor):
    for name in model_names():
        c = parse_config(config_text(name, flavor))
        s = spec.MODELS[name]
        assert c.name == name and c.max_batch_size == s.max_batch_size
        assert [i.name for i in c.input] == list(s.input_names)
        assert [o.name for o in c.output] == list(s.output_names)
        if name == "deepfake_frames":
            assert c.platform == "ensemble" and len(c.ensemble_scheduling.step) == 4
    trt_cls = parse_config(config_text("frame_classifier", "gpu-tensorrt"))
    assert trt_cls.platform == "tensorrt_plan" and trt_cls.instance_group[0].kind == trt_cls.instance_group[0].KIND_GPU
    for fl in ("gpu", "gpu-tensorrt"):
        crop = parse_config(config_text("face_crop", fl))
        assert crop.parameters["FORCE_CPU_ONLY_INPUT_TENSORS"].string_value == "no"
        assert crop.instance_group[0].kind == crop.instance_group[0].KIND_GPU
        video = parse_config(config_text("deepfake_video", fl))
        assert video.instance_group[0].count == spec.DEEPFAKE_VIDEO.gpu_instances
    # the gpu flavor's networks: python models running torch fp16 on the GPU
    for name in ("frame_classifier", "face_detector"):
        c = parse_config(config_text(name, "gpu"))
        p = {k: v.string_value for k, v in c.parameters.items()}
        assert c.backend == "python" and c.instance_group[0].kind == c.instance_group[0].KIND_GPU
        assert p["device"] == "cuda" and p["runtime"] == "torch" and p["precision"] == "fp16"
    # deepfake_video: the whole video in its GPU instance in the gpu flavor; BLS from the CPU in gpu-tensorrt
    video = parse_config(config_text("deepfake_video", "gpu"))
    p = {k: v.string_value for k, v in video.parameters.items()}
    assert video.instance_group[0].kind == video.instance_group[0].KIND_GPU
    assert p["device"] == "cuda" and p["scorer"] == "torch" and p["precision"] == "fp16"
    video = parse_config(config_text("deepfake_video", "gpu-tensorrt"))
    assert video.instance_group[0].kind == video.instance_group[0].KIND_CPU and "scorer" not in video.parameters


def test_gpu_flavor_installs_the_seed_weights_not_onnx(tmp_path, exported):
    """The gpu flavor's torch networks load the seed weights: the export's metadata (random seed or the
    checkpoint, copied in), never an ONNX file or a TensorRT plan."""
    from dfserve.models import read_metadata

    repo = build_repo(tmp_path / "gpu repo", "gpu", exported.out_dir)
    for name in ("frame_classifier", "face_detector", "deepfake_video"):
        v = repo / name / "1"
        assert (v / "model.py").is_file() and not list(v.glob("*.onnx")) and not list(v.glob("*.plan"))
        assert read_metadata(v, need_onnx=False) == read_metadata(exported.out_dir)
    for name in ("frame_classifier", "deepfake_video"):  # the export came from a checkpoint
        assert (repo / name / "1" / "seed_checkpoint.pt").is_file()


def test_ensemble_batch_limits_fit_its_steps():
    ens = parse_config(config_text("deepfake_frames", "cpu"))
    for st in ens.ensemble_scheduling.step:
        assert spec.MODELS[st.model_name].max_batch_size >= ens.max_batch_size


def test_aggregator_is_stateful():
    c = parse_config(config_text("video_aggregator", "cpu"))
    assert c.sequence_batching.max_sequence_idle_microseconds > 0
    assert all(i.allow_ragged_batch for i in c.input)


def _params(path):
    return {k: v.string_value for k, v in parse_config(path.read_text()).parameters.items()}


def test_the_builder_writes_the_request_limits(tmp_path, monkeypatch):
    """deepfake_video's config carries the spec's request limits (all six, issue 25); `dfserve repo build
    --max-frames --max-pixels --max-cpu-s ...`, the DFSERVE_MAX_* environment and build_repo(limits=) set them;
    no other model gets them."""
    from dfserve.cli import main
    from dfserve.pipeline.limits import RequestLimits

    build_repo(tmp_path / "default", "cpu")
    defaults = {"max_frames": "36000", "max_pixels": "8294400", "max_total_pixels": "74649600000",
                "max_cpu_s": "600", "max_wall_s": "1800", "max_upload_bytes": "524288000"}
    assert _params(tmp_path / "default" / "deepfake_video" / "config.pbtxt") == {"device": "cpu", **defaults}
    assert {k: v for k, v in _params(COMMITTED / "deepfake_video" / "config.pbtxt").items() if k != "device"} == defaults
    want = {"device": "cpu", **defaults, "max_frames": "100", "max_pixels": "230400", "max_cpu_s": "2.5"}
    build_repo(tmp_path / "api", "gpu", limits=RequestLimits(max_frames=100, max_pixels=640 * 360, max_cpu_s=2.5))
    gpu_video = {"device": "cuda", "FORCE_CPU_ONLY_INPUT_TENSORS": "no", "scorer": "torch", "precision": "fp16"}
    assert _params(tmp_path / "api" / "deepfake_video" / "config.pbtxt") == {**want, **gpu_video}
    monkeypatch.setenv("DFSERVE_MAX_CPU_S", "2.5")
    monkeypatch.setenv("DFSERVE_MAX_FRAMES", "7")  # the flag wins over the environment
    assert main(["repo", "build", "--out", str(tmp_path / "cli"), "--max-frames", "100", "--max-pixels", "230400"]) == 0
    assert _params(tmp_path / "cli" / "deepfake_video" / "config.pbtxt") == want
    for name in model_names():
        if name != "deepfake_video":
            assert not set(_params(tmp_path / "cli" / name / "config.pbtxt")) & set(want) - {"device"}, name
    with pytest.raises(SystemExit) as e:
        main(["repo", "build", "--out", str(tmp_path / "bad"), "--max-frames", "-5"])
    assert e.value.code == 2
