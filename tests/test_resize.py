"""The face resize (dfserve.resize): numpy and torch bit-exact to Pillow 12 (committed golden hashes) and to
each other; the same classifier-input bytes from every path that runs on the CPU."""
import json

import numpy as np
import pytest

from dfserve import spec
from dfserve.errors import ImageShapeError
from dfserve.resize import fixed_point_weights, resize_crops_torch, resize_uint8

from resize_cases import GOLDEN, crop, sha

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture(scope="module")
def golden():
    data = json.loads(GOLDEN.read_text())
    assert data["pillow"].startswith("12.") and data["size"] == spec.FACE_SIZE
    out = []
    for c in data["cases"]:
        img = crop(c["h"], c["w"], c["kind"], c["seed"])
        assert sha(img) == c["input"], f"the crop generator changed for case {c}: regenerate the golden set"
        out.append((c, img))
    return out


def _torch_one(torch, img, device):
    h, w = img.shape[:2]
    frames = torch.from_numpy(img)[None].to(device)
    return resize_crops_torch(frames, torch.zeros(1, dtype=torch.long, device=device), [[0, h, 0, w]])[0].cpu().numpy()


def test_numpy_matches_pillow12_bit_for_bit(golden):
    bad = [(c["h"], c["w"], c["kind"]) for c, img in golden if sha(resize_uint8(img)) != c["pillow12"]]
    assert not bad, f"{len(bad)} of {len(golden)} crops differ from Pillow 12: {bad[:10]}"


@pytest.mark.parametrize("device", DEVICES)
def test_torch_matches_pillow12_bit_for_bit(golden, device):
    torch = pytest.importorskip("torch")
    bad = [(c["h"], c["w"], c["kind"]) for c, img in golden if sha(_torch_one(torch, img, device)) != c["pillow12"]]
    assert not bad, f"{len(bad)} of {len(golden)} crops differ from Pillow 12: {bad[:10]}"


def test_matches_the_installed_pillow_run_one_pass_at_a_time(golden):
    """Independent of the golden file: any Pillow resizing one axis at a time runs exactly one pass, so
    width first then height is the seed's order; the installed Pillow (13 here) agrees bit for bit."""
    from PIL import Image

    for c, img in golden[::4]:
        im = Image.fromarray(img)
        seed_order = np.asarray(im.resize((112, im.height), Image.BILINEAR).resize((112, 112), Image.BILINEAR))
        assert np.array_equal(resize_uint8(img), seed_order), (c["h"], c["w"], c["kind"])


@pytest.mark.parametrize("device", DEVICES)
def test_torch_batch_of_mixed_crops_equals_numpy(device):
    """Crops of many sizes cut from a batch of frames in one call, including tall faces, 1-2 px wide
    crops, upscaling of small crops and exact 112, against numpy crop by crop."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 256, (4, 260, 300, 3), dtype=np.uint8)
    shapes = [(170, 130), (230, 150), (144, 96), (112, 112), (1, 1), (2, 1), (1, 2), (240, 2), (2, 280), (30, 20),
              (60, 112), (112, 60), (259, 299)]
    shapes += [(int(rng.integers(1, 260)), int(rng.integers(1, 300))) for _ in range(20)]
    fidx, tblr = [], []
    for k, (h, w) in enumerate(shapes):
        t, l = int(rng.integers(0, 260 - h + 1)), int(rng.integers(0, 300 - w + 1))
        fidx.append(k % 4)
        tblr.append([t, t + h, l, l + w])
    got = resize_crops_torch(torch.from_numpy(frames).to(device), torch.tensor(fidx, device=device), np.array(tblr))
    assert got.dtype == torch.uint8 and tuple(got.shape) == (len(shapes), 112, 112, 3)
    got = got.cpu().numpy()
    for k, (f, (t, b, l, r)) in enumerate(zip(fidx, tblr)):
        assert np.array_equal(got[k], resize_uint8(frames[f, t:b, l:r])), shapes[k]


def test_weights_are_pillows_fixed_point():
    """Each output pixel's weights sum to 1.0 in fixed point within rounding, over a window of the right width."""
    for n_in in (1, 2, 96, 111, 112, 113, 130, 1920):
        m = fixed_point_weights(n_in, 112)
        assert m.shape == (112, n_in) and m.min() >= 0
        one = 1 << spec.RESIZE_PRECISION_BITS
        assert np.abs(m.sum(1) - one).max() <= m.shape[1]  # each weight rounds by at most 1/2
        width = (m > 0).sum(1).max()
        assert width <= 2 * int(np.ceil(max(n_in / 112, 1.0))) + 1
    assert np.array_equal(fixed_point_weights(112, 112), np.eye(112, dtype=np.int64) << spec.RESIZE_PRECISION_BITS)


def test_bad_inputs_raise_typed_errors():
    with pytest.raises(ImageShapeError, match="uint8"):
        resize_uint8(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ImageShapeError, match="empty"):
        resize_uint8(np.zeros((0, 10, 3), np.uint8))
    torch = pytest.importorskip("torch")
    with pytest.raises(ImageShapeError, match="outside"):
        resize_crops_torch(torch.zeros(1, 10, 10, 3, dtype=torch.uint8), torch.zeros(1, dtype=torch.long), [[0, 11, 0, 5]])


@pytest.mark.parametrize("device", DEVICES)
def test_torch_groups_bounded_memory_give_the_same_bytes(device, monkeypatch):
    """Crops processed in groups (ACC_BYTES) give what one batch gives, on whole frames and on crops."""
    torch = pytest.importorskip("torch")
    import dfserve.resize as resize

    rng = np.random.default_rng(11)
    frames = torch.from_numpy(rng.integers(0, 256, (3, 90, 160, 3), dtype=np.uint8)).to(device)
    whole = np.tile(np.array([[0, 90, 0, 160]]), (3, 1))
    crops = np.array([[5, 80, 10, 70], [0, 90, 100, 160], [20, 41, 3, 150]])
    fidx = torch.tensor([2, 0, 1], device=device)
    want = [resize_crops_torch(frames, fidx, b, s).cpu() for b, s in ((whole, (45, 80)), (crops, 112))]
    monkeypatch.setattr(resize, "ACC_BYTES", {device: 1})
    monkeypatch.setattr(resize, "ACC_BYTES_OTHER", 1)
    got = [resize_crops_torch(frames, fidx, b, s).cpu() for b, s in ((whole, (45, 80)), (crops, 112))]
    for w, g in zip(want, got):
        assert torch.equal(w, g)
    assert np.array_equal(got[0][1].numpy(), resize_uint8(frames[0].cpu().numpy(), (45, 80)))


WHOLE = [(720, 1280, 360, 640), (1080, 1920, 360, 640), (1440, 2560, 360, 640), (1280, 720, 640, 360),
         (1800, 3200, 360, 640), (1920, 1080, 640, 360), (63, 98, 21, 49), (9, 14, 3, 7), (7, 9, 1, 3)]


def _frame(h, w, seed, kind):
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if kind == "flat":  # extremes: sums at their largest (255 everywhere) next to 0
        img = np.full((h, w, 3), 255, np.uint8)
        img[: h // 3] = 0
        return img
    y, x = np.mgrid[0:h, 0:w]  # smooth ramps with edges, where ties of the rounding are common
    img = np.stack([(x * 7 + y * 3) % 256, (x // 5 * 40) % 256, (y * 11) % 256], -1).astype(np.uint8)
    return img


@pytest.mark.parametrize("h,w,oh,ow", WHOLE)
def test_whole_factor_downscale_is_the_definition_bit_for_bit(h, w, oh, ow):
    """The detector input's fast form (OpenCV filters) equals resize_uint8, and so Pillow, on every pixel,
    edges included, for frames of noise, ramps and saturated blocks."""
    from PIL import Image

    from dfserve.resize import downscale_whole, whole_factor_plans

    assert whole_factor_plans((h, w), (oh, ow)) is not None
    for kind, seed in (("noise", 1), ("ramp", 2), ("flat", 3)):
        img = _frame(h, w, seed, kind)
        want = resize_uint8(img, (oh, ow))
        got = downscale_whole(img, (oh, ow))
        assert got is not None and np.array_equal(got, want), (h, w, kind, int((got != want).sum()))
        pil = np.asarray(Image.fromarray(img).resize((ow, oh), Image.BILINEAR))  # aspect kept: one order
        assert np.array_equal(pil, want)
    gray = _frame(h, w, 4, "noise")[:, :, 0]
    assert np.array_equal(downscale_whole(gray, (oh, ow)), resize_uint8(gray, (oh, ow)))


@pytest.mark.parametrize("device", DEVICES)
def test_whole_factor_downscale_in_torch_is_the_definition(device):
    """The torch form (strided integer convolutions, used for the detector input on the GPU) gives
    resize_uint8's values for a batch of frames, every whole factor above."""
    torch = pytest.importorskip("torch")
    from dfserve.resize import downscale_frames_torch

    for h, w, oh, ow in WHOLE[:7]:
        frames = np.stack([_frame(h, w, s, k) for s, k in ((5, "noise"), (6, "ramp"), (7, "flat"))])
        got = downscale_frames_torch(torch.from_numpy(frames).to(device), (oh, ow))
        assert got.dtype == torch.float32 and tuple(got.shape) == (3, 3, oh, ow)
        got = got.permute(0, 2, 3, 1).cpu().numpy()
        for k in range(3):
            want = resize_uint8(frames[k], (oh, ow))
            assert np.array_equal(got[k], want.astype(np.float32)), (h, w, k)


def test_whole_factor_form_only_where_it_is_exact():
    """No fast form for fractional factors (854x480 -> 640x360), enlargements, or whole factors whose fixed-point
    weights are not exact and whose divisor is even (6: 4K -> 640x360): those frames are resized another way."""
    from dfserve.resize import downscale_whole, whole_factor, whole_factor_plans

    assert whole_factor_plans((480, 854), (360, 640)) is None
    assert whole_factor_plans((2160, 3840), (360, 640)) is None and whole_factor(3840, 640) is None
    assert whole_factor(640, 640) is None and whole_factor(320, 640) is None
    assert downscale_whole(np.zeros((480, 854, 3), np.uint8), (360, 640)) is None
    for f in (2, 3, 4, 5, 7, 8):
        p = whole_factor(640 * f, 640)
        assert p is not None and p.factor == f and sum(p.kernel) == p.divisor
