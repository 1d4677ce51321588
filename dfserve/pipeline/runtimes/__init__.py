"""The runtimes that run the two networks (onnxruntime, OpenVINO, torch; TensorRT in export/) behind one
interface (`ort.Runtime`); `choice` picks one. The data path (decode, detect, crop, classify, aggregate) is
in dfserve/pipeline beside this folder and never depends on which runtime runs."""
