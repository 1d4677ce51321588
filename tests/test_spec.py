from dfserve import spec


def test_spec_names_unique_and_constants():
    names = [m.name for m in spec.ALL_MODELS]
    assert len(names) == len(set(names))
    for m in spec.ALL_MODELS:
        assert len(set(m.input_names)) == len(m.input_names)
        assert len(set(m.output_names)) == len(m.output_names)
    assert spec.FRAME_CLASSIFIER.input("faces").full_shape == (-1, 3, 112, 112)
    assert spec.FRAME_CLASSIFIER.output("logits").full_shape == (-1, 2)
    assert spec.CLASS_NAMES[1] == "REAL" and spec.CLASS_NAMES[0] == "FAKE"
    assert spec.CHANNEL_ORDER == "BGR"
    assert spec.NORM_MEAN == (0.485, 0.456, 0.406) and spec.NORM_STD == (0.229, 0.224, 0.225)
    for m in spec.ALL_MODELS:
        if m.preferred_batch_sizes:
            assert max(m.preferred_batch_sizes) <= m.max_batch_size


def test_unknown_tensor_name_is_a_clear_error():
    import pytest

    with pytest.raises(KeyError, match="valid: faces"):
        spec.FRAME_CLASSIFIER.input("input.1")
