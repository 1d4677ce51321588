"""The OpenVINO runtime against onnxruntime (fp32 parity), the runtime chooser and the score options."""
import numpy as np
import pytest

from dfserve.errors import ModelFilesError, UsageError
from dfserve.pipeline.engine import ScoreOptions, Scorer
from dfserve.pipeline.runtimes.ort import OnnxRuntime
from dfserve.pipeline.sampling import parse_policy

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def ort_runtime(exported):
    return OnnxRuntime(exported.out_dir)


@pytest.fixture(scope="module")
def ov_runtime(exported):
    from dfserve.pipeline.runtimes.openvino import OpenVinoRuntime

    return OpenVinoRuntime(exported.out_dir, classifier_batch=8)


def _p_fake(logits):
    from dfserve.pipeline.aggregate import p_fake_per_frame

    return p_fake_per_frame(logits)


def test_fp32_logits_match_onnxruntime_on_real_face_crops(ort_runtime, ov_runtime):
    from dfserve.samples import astronaut_face_crops, calibration_faces, normalize_faces

    faces = np.concatenate([normalize_faces(astronaut_face_crops(20, seed=11)), calibration_faces(12, seed=5)])
    want, got = ort_runtime.classify(faces), ov_runtime.classify(faces)
    assert got.shape == want.shape == (32, 2) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-3
    assert np.abs(_p_fake(got) - _p_fake(want)).max() < 1e-4
    # the video verdict (mean head) too
    assert abs(_p_fake(got.mean(0, keepdims=True))[0] - _p_fake(want.mean(0, keepdims=True))[0]) < 1e-4
    assert ov_runtime.classify(faces[:0]).shape == (0, 2)
    assert np.allclose(ov_runtime.classify(faces[:3]), got[:3], atol=1e-4)  # batch size does not matter


def test_fp32_detector_matches_onnxruntime_at_two_sizes(ort_runtime, ov_runtime):
    from dfserve.pipeline.faces import detector_input
    from dfserve.samples import astronaut_bgr

    img = astronaut_bgr()
    for frames in ([img, img[:, ::-1].copy()], [np.ascontiguousarray(np.pad(img, ((0, 0), (64, 64), (0, 0))))]):
        x, _ = detector_input(frames, 640)
        (l0, s0, m0), (l1, s1, m1) = ort_runtime.detect(x), ov_runtime.detect(x)
        assert l1.shape == l0.shape and s1.shape == s0.shape and m1.shape == m0.shape
        assert np.abs(m1 - m0).max() < 1e-3
        assert np.abs(s1 - s0).max() < 1e-4 and np.abs(l1 - l0).max() < 1e-3


def test_scores_agree_with_onnxruntime_end_to_end(exported, videos):
    from dfserve.scoring import ScorerConfig, make_scorer

    paths = [videos[k]["path"] for k in ("face", "hevc", "noface", "corrupt")]
    opts = ScoreOptions(sample=parse_policy("every:2"), timeline=True)
    rows = {}
    for rt in ("onnxruntime", "openvino"):
        sc = make_scorer(opts, ScorerConfig(models=exported.out_dir, runtime=rt))
        rows[rt] = {r["path"]: r for r in sc.score(paths)}
    for p in paths:
        a, b = rows["onnxruntime"][p], rows["openvino"][p]
        assert a["runtime"] == "onnxruntime" and b["runtime"] == "openvino"
        assert a["precision"] == b["precision"] == "fp32"
        assert (a["error"] or {}).get("type") == (b["error"] or {}).get("type")
        assert a["frames_scored"] == b["frames_scored"]
        if a["p_fake"] is not None:
            assert abs(a["p_fake"] - b["p_fake"]) < 1e-4
            for ta, tb in zip(a["timeline"], b["timeline"]):
                assert ta[0] == tb[0] and (ta[2] is None) == (tb[2] is None)
                if ta[1] is not None:
                    assert abs(ta[1] - tb[1]) < 1e-4


def test_auto_is_openvino_when_installed_and_pairs_are_checked():
    from dfserve.pipeline.runtimes.choice import resolve_runtime

    assert resolve_runtime("auto", "fp32") == "openvino"
    assert resolve_runtime("auto", "bf16") == "openvino"
    assert resolve_runtime("onnxruntime", "int8") == "onnxruntime"
    with pytest.raises(UsageError, match="bf16 runs in OpenVINO"):
        resolve_runtime("onnxruntime", "bf16")
    with pytest.raises(UsageError, match="torch"):
        resolve_runtime("torch", "int8")
    with pytest.raises(UsageError, match="precision"):
        resolve_runtime("auto", "fp8")


def test_missing_int8_variant_names_the_file_and_the_command(exported, tmp_path):
    from dfserve.pipeline.runtimes.openvino import OpenVinoRuntime

    d = tmp_path / "no int8"
    d.mkdir()
    for f in exported.out_dir.iterdir():
        if f.name != "frame_classifier.int8.onnx":
            (d / f.name).symlink_to(f)
    for make in (lambda: OpenVinoRuntime(d, precision="int8"), lambda: OnnxRuntime(d, precision="int8")):
        with pytest.raises(ModelFilesError, match=r"frame_classifier\.int8\.onnx.*--precision int8"):
            make()
    with pytest.raises(UsageError, match="bf16"):
        OnnxRuntime(d, precision="bf16")


def test_score_cli_accepts_runtime_and_precision():
    from dfserve.cli import build_parser

    a = build_parser().parse_args(["score", "x.mp4", "--runtime", "openvino", "--precision", "bf16"])
    assert (a.runtime, a.precision) == ("openvino", "bf16")
    a = build_parser().parse_args(["score", "x.mp4"])
    assert (a.runtime, a.precision) == ("auto", "fp32")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["score", "x.mp4", "--precision", "fp16"])


def test_triton_network_session_uses_the_configured_runtime(exported, ort_runtime, tmp_path):
    """The Triton cpu flavor's python models build their session with make_network_session (config params)."""
    from dfserve.errors import ModelFilesError
    from dfserve.pipeline.runtimes.choice import make_network_session
    from dfserve.samples import calibration_faces

    v = tmp_path / "1"
    v.mkdir()
    (v / "model.onnx").symlink_to(exported.out_dir / "frame_classifier.onnx")
    x = calibration_faces(6, seed=2)
    want = ort_runtime.classify(x)
    for rt in ("onnxruntime", "openvino", "auto"):
        run = make_network_session(v, True, rt, "fp32", 2, ["logits"])
        assert run.runtime == ("openvino" if rt == "auto" else rt)
        assert np.abs(run({"faces": x})["logits"] - want).max() < 1e-3
    with pytest.raises(ModelFilesError, match="model.int8.onnx"):
        make_network_session(v, True, "openvino", "int8")


# ------------------------------------------------------------ issue 23: per-network threads (model_threads)
def test_model_threads_split_the_cores_and_the_env_overrides(monkeypatch):
    from dfserve.pipeline.runtimes.ort import MODEL_THREADS_ENV, model_threads

    monkeypatch.delenv(MODEL_THREADS_ENV, raising=False)
    for cores in (1, 3, 4, 8, 16, 64):  # not measured beyond 2 cores: every core for each network
        for precision in ("fp32", "bf16", "int8"):
            assert model_threads(cores, precision) == (cores, cores)
    # measured fastest on 2 cores: the network that costs less per frame gets one thread, the dearer one both
    assert model_threads(2) == model_threads(2, "fp32") == (1, 2)
    assert model_threads(2, "bf16") == (1, 2)
    assert model_threads(2, "int8") == (2, 1)  # the int8 classifier is cheaper than the (bf16) detector
    assert model_threads()[0] >= 1
    monkeypatch.setenv(MODEL_THREADS_ENV, "all")
    assert model_threads(4) == (4, 4)
    assert model_threads(2, "int8") == (2, 2)
    monkeypatch.setenv(MODEL_THREADS_ENV, "1,3")
    assert model_threads(4) == (1, 3)
    monkeypatch.setenv(MODEL_THREADS_ENV, "two")
    with pytest.raises(UsageError):
        model_threads(4)


def test_rows_are_the_same_with_the_networks_split_or_on_every_core(exported, videos, monkeypatch):
    """Thread counts change speed only: the rows of a short clip agree (frames, boxes' outcome, verdict)."""
    from dfserve.pipeline.runtimes.ort import MODEL_THREADS_ENV
    from dfserve.pipeline.runtimes.openvino import OpenVinoRuntime

    rows = {}
    for env in ("1,1", "2,2", "1,2"):
        monkeypatch.setenv(MODEL_THREADS_ENV, env)
        rt = OpenVinoRuntime(exported.out_dir, threads=2, classifier_batch=8)
        assert (rt.detector_threads, rt.classifier_threads) == tuple(int(v) for v in env.split(","))
        row = next(iter(Scorer(rt, ScoreOptions(sample=parse_policy("every:3"))).score([videos["face"]["path"]])))
        rows[env] = row
    ref = rows["1,1"]
    for env, r in rows.items():
        assert (r["label"], r["frames_scored"], r["frames_with_face"]) == (ref["label"], ref["frames_scored"],
                                                                          ref["frames_with_face"]), env
        assert abs(r["p_fake"] - ref["p_fake"]) < 1e-4, env
