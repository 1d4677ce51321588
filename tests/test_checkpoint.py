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
