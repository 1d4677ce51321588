"""The device-side detect stage (pipeline/device_faces.py) against the CPU path's post-processing, on the
same real detector outputs: batched NMS, box convention, largest / all faces. One test body per device."""
import numpy as np
import pytest

from dfserve import samples, spec
from dfserve.pipeline.detection import anchors, decode_boxes, nms
from dfserve.pipeline.faces import detector_input, faces_per_frame

torch = pytest.importorskip("torch")
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture(scope="module")
def outputs(exported, tmp_path_factory):
    import av

    from dfserve.pipeline.runtimes.ort import OnnxRuntime

    rt = OnnxRuntime(exported.out_dir)
    crowd = tmp_path_factory.mktemp("crowd") / "crowd.mp4"
    samples.make_crowd_video(crowd, rows=2, cols=3, n_frames=2, width=640, height=360)
    with av.open(str(crowd)) as c:
        group = next(c.decode(video=0)).to_ndarray(format="bgr24")
    # faces of several sizes, one frame without a face, a frame with six people
    frames = samples.face_frames(4, 640, 360, seed=3) + [np.full((360, 640, 3), 90, np.uint8), group]
    x, scale = detector_input(frames)
    loc, scores, lm = rt.detect(x)
    return loc, scores, x.shape[2], x.shape[3], scale, lm


def _dev(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return device


@pytest.mark.parametrize("device", DEVICES)
def test_batched_nms_keeps_what_the_greedy_host_nms_keeps(outputs, device):
    from dfserve.pipeline.device_faces import batched_nms

    loc, scores, h, w, _, _ = outputs
    pri = anchors(h, w)
    img, a = np.nonzero(scores > 0.05)  # a low threshold: many overlapping candidates per face
    boxes = decode_boxes(loc[img, a], pri[a], h, w)
    sc = scores[img, a]
    t = lambda v: torch.from_numpy(np.ascontiguousarray(v)).to(_dev(device))  # noqa: E731
    for tv in (False, None):  # plain torch; torchvision's where it imports
        keep = batched_nms(t(boxes), t(sc), t(img), spec.DETECTOR_NMS_IOU, use_torchvision=tv).cpu().numpy()
        got = sorted(map(tuple, np.stack([img[keep], a[keep]], 1)))
        want = []
        for k in np.unique(img):
            sel = np.nonzero(img == k)[0]
            want += [(k, a[sel[j]]) for j in nms(boxes[sel], sc[sel], spec.DETECTOR_NMS_IOU)]
        assert got == sorted(want) and len(want) > len(np.unique(img))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["largest", "all"])
@pytest.mark.parametrize("box", spec.BOX_CONVENTIONS)
def test_device_location_equals_the_cpu_path(outputs, device, mode, box):
    from dfserve.pipeline import device_faces

    loc, scores, h, w, scale, lm = outputs
    dev = _dev(device)
    rows = device_faces.locate(torch.from_numpy(loc).to(dev), torch.from_numpy(scores).to(dev),
                               torch.from_numpy(anchors(h, w)).to(dev), h, w, scale, box=box, mode=mode,
                               landmarks=torch.from_numpy(lm).to(dev))
    assert rows.device.type == dev  # nothing left the device
    got = device_faces.to_detections(rows, loc.shape[0])
    want = faces_per_frame(loc, scores, h, w, scale, mode=mode, box=box, landmarks=lm)
    assert [len(g) for g in got] == [len(x) for x in want] and len(want[4]) == 0
    assert len(want[5]) >= (4 if mode == "all" else 1)
    for gs, ws in zip(got, want):
        for g, e in zip(gs, ws):
            if box == spec.BOX_SEED:  # snapped to dlib's grid: integer cell and level, then the same constants
                assert np.array_equal(g.box, e.box), (g.box, e.box)
            else:  # raw decoded boxes: exp on torch and numpy may differ in the last bit
                np.testing.assert_allclose(g.box, e.box, atol=1e-3)
            assert abs(g.score - e.score) < 1e-6


@pytest.mark.parametrize("hw", [(720, 1280), (1080, 1920), (1280, 720), (480, 854), (272, 480)])
def test_detector_input_is_the_same_bytes_on_every_path(hw):
    """The CPU path downscales with Pillow, the torch path with dfserve.resize on the device: for the
    detector's aspect-kept downscales the two are the same definition (Pillow only reorders its passes
    for crops shrunk much more vertically), so both detect on identical pixels."""
    from dfserve.pipeline.runtimes.torch_rt import frames_to_detector
    from dfserve.resize import resize_uint8

    frames = samples.face_frames(2, hw[1], hw[0], seed=5)
    want, scale = detector_input(frames)
    got, s2 = frames_to_detector(torch.from_numpy(np.stack(frames)))
    assert s2 == scale and got.dtype == torch.float32 and np.array_equal(got.numpy(), want)
    if scale < 1.0:
        assert np.array_equal(resize_uint8(frames[0], want.shape[2:]), want[0].transpose(1, 2, 0).astype(np.uint8))


def test_face_crop_on_tensors_gives_the_host_models_bytes(exported):
    """Triton's face_crop in the gpu flavor (faces_of_chunk, here on CPU tensors) against the cpu flavor's
    host code on the same frames and detector outputs: the same boxes and the same classifier input bytes."""
    from dfserve.pipeline.device_faces import faces_of_chunk
    from dfserve.pipeline.faces import choose_faces, faces_for_classifier
    from dfserve.pipeline.runtimes.ort import OnnxRuntime

    frames = samples.face_frames(3, 640, 360, seed=9) + [np.full((360, 640, 3), 60, np.uint8)]
    x, scale = detector_input(frames)
    loc, scores, lm = OnnxRuntime(exported.out_dir).detect(x)
    want_faces, want_boxes, want_has = faces_for_classifier(frames, choose_faces(loc, scores, x.shape[2], x.shape[3], scale,
                                                                                 landmarks=lm))
    faces, boxes, has = faces_of_chunk(torch.from_numpy(np.stack(frames)), torch.from_numpy(loc), torch.from_numpy(scores),
                                       landmarks=torch.from_numpy(lm))
    assert np.array_equal(has, want_has) and has[:3].all() and not has[3]
    assert np.array_equal(boxes, want_boxes)
    assert np.array_equal(faces.numpy(), want_faces)
    with pytest.raises(ValueError, match="NaN"):
        faces_of_chunk(torch.from_numpy(np.stack(frames)), torch.from_numpy(loc * np.nan), torch.from_numpy(scores),
                       landmarks=torch.from_numpy(lm))
