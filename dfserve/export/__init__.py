"""Model definitions, seed checkpoint loading, ONNX export + validation, TensorRT build."""
