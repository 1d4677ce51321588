"""ONNX export: names, dynamic batch, parity with the seed forward, detector rebuild, metadata."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from dfserve import spec
from dfserve.errors import UsageError
from dfserve.export.reference import SeedReference
from dfserve.nets.retinaface import FaceDetector, load_from_onnx, shipped_onnx_bytes
from dfserve.pipeline.aggregate import verdict_from_logits
from dfserve.pipeline.detection import choose_face, detections
from dfserve.samples import ASTRONAUT_FACE_BOX, astronaut_bgr, astronaut_face_crops, normalize_faces


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_classifier_names_and_dynamic_batch(exported):
    path = exported.out_dir / spec.CLASSIFIER_ONNX
    g = onnx.load(str(path), load_external_data=False).graph
    assert [i.name for i in g.input] == ["faces"] and [o.name for o in g.output] == ["logits"]
    dims = g.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 112, 112]
    s = _session(path)
    for b in (1, 5):
        out = s.run(None, {"faces": np.zeros((b, 3, 112, 112), np.float32)})[0]
        assert out.shape == (b, 2)


@pytest.fixture(scope="module")
def onnx_logits_100(exported):
    faces = normalize_faces(astronaut_face_crops(100, seed=11))
    s = _session(exported.out_dir / spec.CLASSIFIER_ONNX)
    logits = np.concatenate([s.run(None, {"faces": faces[i:i + 25]})[0] for i in range(0, 100, 25)])
    return faces, logits


@pytest.mark.parametrize("head", spec.HEADS)
@pytest.mark.parametrize("n", [1, 10, 100])
def test_video_verdict_matches_seed_forward(seed_model, onnx_logits_100, head, n):
    faces, logits = onnx_logits_100
    seed_v = SeedReference(seed_model).predict_tensor(torch.from_numpy(faces[:n]), head)
    z = logits[:n].mean(0) if head == "mean" else logits[n - 1]
    ours = verdict_from_logits(z)
    assert abs(ours.p_fake - seed_v.p_fake) <= 1e-4
    assert ours.label == seed_v.label or abs(seed_v.p_fake - 0.5) < 1e-4


def test_random_weights_give_varied_verdicts(onnx_logits_100):
    # the seeded random model must not saturate: otherwise the parity tests above prove little
    from dfserve.pipeline.aggregate import p_fake_per_frame

    p = p_fake_per_frame(onnx_logits_100[1])
    assert 0.01 < p.mean() < 0.99 and p.std() > 0.02


def test_metadata(exported, checkpoint_path):
    meta = json.loads((exported.out_dir / spec.METADATA_JSON).read_text())
    assert meta["weights"]["checkpoint"] == str(checkpoint_path)
    assert len(meta["weights"]["sha256"]) == 64 and meta["weights"]["untrained"] is False
    assert meta["spec_version"] == spec.SPEC_VERSION and meta["head"] == "mean"
    v = meta["validation"]["frame_classifier"]
    assert v["max_verdict_prob_error"] <= spec.TOL_VERDICT_PROB and v["max_logit_error_over_tolerance"] <= 1
    assert "float64" in v["truth"] and v["frames"] == 100
    assert v["vs_float32_seed_forward"]["max_verdict_prob_error"] <= spec.TOL_VERDICT_PROB
    assert meta["tolerances"]["classifier_logit_rel"] == spec.TOL_CLASSIFIER_LOGIT_REL


def test_export_needs_checkpoint_or_random_init(tmp_path):
    from dfserve.export.onnx_export import export_models

    with pytest.raises(UsageError, match="--random-init --seed N"):
        export_models(tmp_path)


def _astronaut_input():
    return np.ascontiguousarray(astronaut_bgr().astype(np.float32).transpose(2, 0, 1)[None])


def test_rebuilt_detector_finds_the_astronaut_in_torch_and_onnx(exported):
    x = _astronaut_input()
    shipped = ort.InferenceSession(shipped_onnx_bytes(), providers=["CPUExecutionProvider"])
    sloc, sconf, _ = shipped.run(None, {"input": x - np.float32(spec.DETECTOR_MEAN_BGR).reshape(1, 3, 1, 1)})
    ref = choose_face(detections(sloc, sconf[..., 1], 512, 512, box=spec.BOX_RETINAFACE)[0])  # the network's own box
    with torch.no_grad():
        tloc, tscore, _ = (t.numpy() for t in FaceDetector(load_from_onnx())(torch.from_numpy(x)))
    oloc, oscore, _ = _session(exported.out_dir / spec.DETECTOR_ONNX).run(None, {"images": x})
    for loc, score in ((tloc, tscore), (oloc, oscore)):
        face = choose_face(detections(loc, score, 512, 512, box=spec.BOX_RETINAFACE)[0])
        assert face is not None
        assert np.abs(face.box - ref.box).max() < 0.5  # pixels
        assert abs(face.score - ref.score) < 1e-4
        assert face.score > 0.99
    # and it is where the astronaut's face is
    assert np.abs(ref.box - np.array(ASTRONAUT_FACE_BOX)).max() < 2


def test_detector_dynamic_batch_and_size(exported):
    s = _session(exported.out_dir / spec.DETECTOR_ONNX)
    x = np.zeros((3, 3, 200, 328), np.float32)
    loc, scores, lm = s.run(None, {"images": x})
    from dfserve.pipeline.detection import anchors

    n = anchors(200, 328).shape[0]
    assert loc.shape == (3, n, 4) and scores.shape == (3, n) and lm.shape == (3, n, 10)


# ------------------------------------------------------------------------------------------------
# Validation against the float64 seed forward: confident heads pass, broken exports are refused.
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def confident(tmp_path_factory):
    """A seed checkpoint with a confident head (per-frame logits of +-10), its export and float64 truth."""
    from dfserve.export.checkpoint import random_seed_model
    from dfserve.export.onnx_export import export_classifier, validation_faces
    from dfserve.export.reference import float64_truth

    model = random_seed_model(5, logit_std=4.0)
    d = tmp_path_factory.mktemp("confident export")
    path = export_classifier(model, d / spec.CLASSIFIER_ONNX)
    faces = validation_faces()
    return {"model": model, "onnx": path, "faces": faces, "truth": float64_truth(model, faces), "dir": d}


def test_float64_truth_is_the_seed_forward(seed_model):
    from dfserve.export.reference import float64_truth

    faces = torch.from_numpy(normalize_faces(astronaut_face_crops(3, seed=2)))
    truth = float64_truth(seed_model, faces)
    m64 = __import__("copy").deepcopy(seed_model).double()
    with torch.no_grad():
        for head in spec.HEADS:
            _, z = m64(faces.double().unsqueeze(0), head=head)
            assert np.abs(z[0].numpy() - truth.verdict_logits(head, 3)).max() < 1e-10
    assert truth.frame_logits.dtype == np.float64 and truth.scale.shape == (3, 2)


def test_confident_head_spreads_its_verdicts(confident):
    z = confident["truth"].frame_logits
    from dfserve.pipeline.aggregate import p_fake_per_frame

    p = p_fake_per_frame(z)
    assert 5 < np.abs(z).max() < 30  # per-frame |logit| up to ~10 and more
    assert p.min() < 0.05 and p.max() > 0.95 and ((p > 0.2) & (p < 0.8)).sum() >= 3


def test_confident_export_is_accepted(confident):
    from dfserve.export.onnx_export import validate_classifier

    r = validate_classifier(confident["onnx"], confident["model"], faces=confident["faces"], truth=confident["truth"])
    assert r["max_logit_error_over_tolerance"] < 0.5
    assert r["max_verdict_prob_error"] < 1e-4
    # and the ONNX stays within 1e-4 in p_fake of a float32 seed forward on real face crops
    assert r["vs_float32_seed_forward"]["max_verdict_prob_error"] <= spec.TOL_VERDICT_PROB
    for key, err in r["verdict_prob_error"].items():
        assert err <= r["verdict_prob_tolerance"][key]
    print("confident checkpoint export errors:", json.dumps(r))


def _perturbed_onnx(src, dst, dims, index, delta):
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(src))
    init = next(i for i in m.graph.initializer if list(i.dims) == dims)
    w = numpy_helper.to_array(init).copy()
    w[index] += delta
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(m, str(dst))
    return dst


def _rgb_onnx(model, dst):
    """A wrong export: the classifier fed RGB where the seed saw BGR."""
    from dfserve.nets.seed_model import FrameClassifier

    class RGB(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = FrameClassifier(model)

        def forward(self, faces):
            return self.fc(faces.flip(1))

    with torch.no_grad():
        torch.onnx.export(RGB().eval(), (torch.zeros(2, 3, 112, 112),), str(dst), dynamo=False, opset_version=17,
                          input_names=["faces"], output_names=["logits"],
                          dynamic_axes={"faces": {0: "batch"}, "logits": {0: "batch"}})
    return dst


@pytest.mark.parametrize("broken", ["linear1 weight +6%", "conv1 weight +0.01", "RGB instead of BGR"])
def test_broken_exports_are_refused(confident, broken):
    from dfserve.errors import ExportValidationError
    from dfserve.export.onnx_export import validate_classifier

    dst = confident["dir"] / f"broken {broken.split()[0]}.onnx"
    if broken.startswith("linear1"):
        w = float(confident["model"].linear1.weight.detach()[0, 100])
        _perturbed_onnx(confident["onnx"], dst, [2, 2048], (0, 100), 0.06 * abs(w))
    elif broken.startswith("conv1"):
        _perturbed_onnx(confident["onnx"], dst, [64, 3, 7, 7], (0, 0, 3, 3), 0.01)
    else:
        _rgb_onnx(confident["model"], dst)
    with pytest.raises(ExportValidationError, match="float64 seed forward") as e:
        validate_classifier(dst, confident["model"], faces=confident["faces"], truth=confident["truth"],
                            compare_fp32=False)
    assert str(dst) in str(e.value) and "tolerance" in str(e.value)


@pytest.mark.slow
def test_cli_export_accepts_a_confident_data_parallel_checkpoint(confident, tmp_path):
    """`dfserve export` end to end on a confident head saved from nn.DataParallel (module. prefix)."""
    import subprocess
    import sys

    from dfserve.export.checkpoint import save_seed_checkpoint

    ckpt = save_seed_checkpoint(confident["model"], tmp_path / "model_97_acc_10_frames_final_data.pt",
                                data_parallel=True)
    out = tmp_path / "models"
    r = subprocess.run([sys.executable, "-m", "dfserve.cli", "export", "--checkpoint", str(ckpt), "--out", str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "float64 seed forward" in r.stdout
    v = json.loads((out / spec.METADATA_JSON).read_text())["validation"]["frame_classifier"]
    assert v["max_logit_error_over_tolerance"] < 1 and v["max_abs_logit"] > 5
    print("confident DataParallel export, CLI:", r.stdout)
