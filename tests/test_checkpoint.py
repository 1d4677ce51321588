"""Seed checkpoint loading: plain, DataParallel, LSTM with/without bias; clear errors otherwise."""
import pickle

import pytest
import torch

from dfserve.errors import CheckpointError
from dfserve.export.checkpoint import load_seed_model, read_state_dict, save_seed_checkpoint
from dfserve.nets.seed_model import FrameClassifier, SeedModel


def _small_input():
    torch.manual_seed(0)
    return torch.randn(3, 3, 112, 112)


def test_plain_state_dict_roundtrip(seed_model, checkpoint_path):
    m = load_seed_model(checkpoint_path)
    x = _small_input()
    with torch.no_grad():
        a = FrameClassifier(seed_model)(x)
        b = FrameClassifier(m)(x)
    assert torch.equal(a, b)
    assert set(read_state_dict(checkpoint_path)) >= {"model.0.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0",
                                                     "linear1.weight"}
    assert read_state_dict(checkpoint_path)["lstm.weight_ih_l0"].shape == (8192, 2048)


def test_data_parallel_prefix(seed_model, tmp_path):
    p = save_seed_checkpoint(seed_model, tmp_path / "dp.pt", data_parallel=True)
    assert all(k.startswith("module.") for k in torch.load(p, weights_only=True))
    m = load_seed_model(p)
    assert torch.equal(m.linear1.weight, seed_model.linear1.weight)


def test_lstm_with_bias(tmp_path):
    torch.manual_seed(3)
    seed = SeedModel(lstm_bias=True).eval()
    with torch.no_grad():
        seed.lstm.bias_ih_l0.normal_(0, 0.5)
        seed.lstm.bias_hh_l0.normal_(0, 0.5)
    p = save_seed_checkpoint(seed, tmp_path / "bias.pt")
    m = load_seed_model(p)
    assert m.lstm.bias
    x = _small_input()
    with torch.no_grad():
        _, ref = m(x.unsqueeze(0), head="mean")
        folded = FrameClassifier(m)(x).mean(0)
    assert torch.allclose(ref[0], folded, atol=1e-4)


def test_missing_and_unexpected_keys_are_named(seed_model, tmp_path):
    sd = seed_model.state_dict()
    sd.pop("linear1.bias")
    sd["extra.weight"] = torch.zeros(1)
    p = tmp_path / "bad keys.pt"
    torch.save(sd, p)
    with pytest.raises(CheckpointError) as e:
        load_seed_model(p)
    msg = str(e.value)
    assert str(p) in msg and "linear1.bias" in msg and "extra.weight" in msg and "expected" in msg.lower()


def test_wrong_shape_is_named(seed_model, tmp_path):
    sd = seed_model.state_dict()
    sd["linear1.weight"] = torch.zeros(3, 2048)
    p = tmp_path / "shape.pt"
    torch.save(sd, p)
    with pytest.raises(CheckpointError, match=r"linear1.weight: \(3, 2048\) \(expected \(2, 2048\)\)"):
        load_seed_model(p)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_objects_are_refused(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"model.0.weight": Evil()}, p)
    with pytest.raises(CheckpointError, match="weights-only"):
        read_state_dict(p)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", pickle.dumps([1, 2, 3])])
def test_garbage_files(tmp_path, content):
    p = tmp_path / "garbage.pt"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_seed_model(p)


def test_truncated_checkpoint(checkpoint_path, tmp_path):
    p = tmp_path / "truncated.pt"
    p.write_bytes(checkpoint_path.read_bytes()[: 1 << 20])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_seed_model(p)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_seed_model(tmp_path / "nope.pt")


# ------------------------------------------------------------------------------------------------
# Checkpoints as people save them, and `dfserve inspect`.
# ------------------------------------------------------------------------------------------------
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402


def _optimizer_state():
    p = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    p.sum().backward()
    opt.step()
    return opt.state_dict()


@pytest.mark.parametrize("key,prefix", [("state_dict", ""), ("model_state_dict", ""), ("model", "module.")])
def test_training_checkpoint_dicts(seed_model, tmp_path, key, prefix):
    sd = {f"{prefix}{k}": v for k, v in seed_model.state_dict().items()}
    p = tmp_path / f"train {key}.pth"
    torch.save({"epoch": 17, key: sd, "optimizer_state_dict": _optimizer_state(), "loss": 0.231,
                "arch": "resnext50_32x4d+lstm"}, p)
    m = load_seed_model(p)  # weights_only=True throughout
    assert torch.equal(m.linear1.weight, seed_model.linear1.weight)
    assert torch.equal(m.model[0].weight, seed_model.model[0].weight)
    from dfserve.export.checkpoint import read_checkpoint

    _, info = read_checkpoint(p)
    assert info["container_key"] == key and "epoch" in info["other_entries"]
    assert (info["prefix"] == "module.") == bool(prefix)


def test_whole_pickled_model_is_refused_with_how_to_resave(seed_model, tmp_path):
    p = tmp_path / "whole model.pt"
    torch.save(seed_model, p)
    with pytest.raises(CheckpointError) as e:
        load_seed_model(p)
    msg = str(e.value)
    assert str(p) in msg and "SeedModel" in msg and "weights-only" in msg
    assert "torch.save(model.state_dict(), path)" in msg


def test_dict_without_a_state_dict_is_named(tmp_path):
    p = tmp_path / "odd.pt"
    torch.save({"epoch": 3, "weights": [torch.zeros(2)]}, p)
    with pytest.raises(CheckpointError, match="'state_dict', 'model_state_dict', 'model'"):
        load_seed_model(p)


def _dfserve(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "dfserve.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_inspect_json_training_checkpoint(seed_model, tmp_path):
    sd = {f"module.{k}": v for k, v in seed_model.state_dict().items()}
    p = tmp_path / "runs dir" / "model_87.5_acc_20_frames_final_data.pt"
    p.parent.mkdir()
    torch.save({"epoch": 4, "model_state_dict": sd, "optimizer_state_dict": _optimizer_state()}, p)
    r = _dfserve("inspect", str(p), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    from dfserve.export.checkpoint import sha256_file

    assert info["seed_model"] is True and info["problems"] == []
    assert "model_state_dict" in info["format"] and "DataParallel" in info["format"]
    assert info["other_entries"] == ["epoch", "optimizer_state_dict"]
    assert info["head_shape"] == [2, 2048] and info["lstm_bias"] is False
    assert info["lstm_weight_ih_shape"] == [8192, 2048]
    assert info["name_accuracy"] == 87.5 and info["name_frames"] == 20
    n = sum(v.numel() for v in seed_model.parameters())
    assert info["parameters"] == n
    assert info["sha256"] == sha256_file(p)
    assert not (tmp_path / "runs dir" / "frame_classifier.onnx").exists()  # nothing exported


def test_inspect_text_plain_and_bias(tmp_path):
    torch.manual_seed(0)
    m = SeedModel(lstm_bias=True)
    p = save_seed_checkpoint(m, tmp_path / "plain.pt")
    r = _dfserve("inspect", str(p))
    assert r.returncode == 0, r.stderr
    assert "format          state dict" in r.stdout and "LSTM bias       yes" in r.stdout
    assert "[2, 2048]" in r.stdout and "no model_<acc>_acc_<N>_frames pattern" in r.stdout


def test_inspect_refuses_non_seed_and_pickled(tmp_path):
    p = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(3, 3), "linear1.weight": torch.zeros(5, 10)}, p)
    r = _dfserve("inspect", str(p), "--json")
    assert r.returncode == 1
    info = json.loads(r.stdout)
    assert info["seed_model"] is False and any("missing keys" in s for s in info["problems"])
    assert info["head_shape"] == [5, 10]
    q = tmp_path / "pickled.pt"
    torch.save(torch.nn.Linear(2, 2), q)
    r = _dfserve("inspect", str(q))
    assert r.returncode == 1 and "torch.nn.modules.linear.Linear" in r.stderr and "state_dict()" in r.stderr
