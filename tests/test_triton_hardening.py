"""Issue 16 against a real tritonserver: deepfake_video's per-request limits, and the HTTP endpoint
restricted to health and metadata unless `--http-inference`."""
import json
import tempfile
import urllib.error
import urllib.request

import numpy as np
import pytest

from dfserve import samples
from dfserve.client import DeepfakeClient
from dfserve.errors import RequestLimitError
from dfserve.pipeline.limits import RequestLimits
from dfserve.serving.repo import build_repo
from dfserve.serving.server import HTTP_KEY_HEADER, TritonInstall, TritonServer

LIMITED = RequestLimits(max_frames=20, max_pixels=480 * 272)  # the hevc clip (480x272, 30 frames) fits, barely
CPU_S = 0.25  # a server whose requests may use this many CPU seconds (a light request uses ~0.01-0.04 s)


@pytest.fixture(scope="module")
def limited(exported, tmp_path_factory):
    """Frames and pixels limited; HTTP as `dfserve serve` has it by default."""
    repo = build_repo(tmp_path_factory.mktemp("limited repo"), "cpu", exported.out_dir, limits=LIMITED)
    with TritonServer(repo) as srv:
        yield srv


@pytest.fixture(scope="module")
def cpu_limited(exported, tmp_path_factory):
    """CPU seconds limited; HTTP inference open (`dfserve serve --http-inference`)."""
    limits = RequestLimits(max_cpu_s=CPU_S)
    repo = build_repo(tmp_path_factory.mktemp("cpu repo"), "cpu", exported.out_dir, limits=limits)
    with TritonServer(repo, http_inference=True) as srv:
        yield srv


@pytest.fixture(scope="module")
def heavy_clip(tmp_path_factory):
    """Costly to decode: noise, a large H.264 bitstream per frame (40 MB, ~0.9 CPU seconds to decode on
    the 2-core EPYC CI machine), yet few frames and pixels."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("heavy") / "noise.mp4"
    samples.write_video(path, (rng.integers(0, 256, (540, 960, 3), np.uint8) for _ in range(150)))
    return str(path)


def _refused(c: DeepfakeClient, video, limit: str, name: str, **kw) -> str:
    with pytest.raises(RequestLimitError) as e:
        c.score_video(video, name=name, **kw)
    msg = str(e.value)
    assert f"({limit})" in msg and name in msg and "over the limit" in msg, msg
    assert tempfile.gettempdir() not in msg and len(msg) <= 2000
    return msg


def _good(c: DeepfakeClient, path: str, **kw) -> None:
    assert c.is_ready()
    row = c.score_video(path, **kw)
    assert row["error"] is None and row["label"] in ("FAKE", "REAL"), row


# ------------------------------------------------------------------------------------------- limits
@pytest.mark.triton
def test_over_max_frames_is_refused_and_the_server_goes_on(limited, videos):
    """Every decoded frame counts, sampled or not: `every:10` of 30 frames decodes 30 > 20."""
    with DeepfakeClient(limited.grpc_url) as c:
        msg = _refused(c, videos["hevc"]["path"], "max_frames", "long clip.mkv", sample="every:10")
        assert "limit of 20 frames decoded per request" in msg
        _good(c, videos["hevc"]["path"], sample="first:8")


@pytest.mark.triton
def test_over_max_pixels_is_refused_and_the_server_goes_on(limited, videos):
    with DeepfakeClient(limited.grpc_url) as c:
        msg = _refused(c, videos["face"]["path"], "max_pixels", "big clip.mp4", sample="first:2")
        assert "frame 0 is 640x360 = 230400 pixels" in msg
        _good(c, videos["hevc"]["path"], sample="first:4")


@pytest.mark.triton
def test_a_limit_is_a_typed_error_row_for_score_server(limited, videos):
    """`dfserve score --server --faces all` sends the file to deepfake_video: over a limit, that video's row
    says RequestLimitError (with the path the user gave), the next video is scored."""
    from dfserve.client.remote import RemoteScorer
    from dfserve.pipeline.options import ScoreOptions
    from dfserve.pipeline.sampling import parse_policy

    big, ok = videos["face"]["path"], videos["hevc"]["path"]
    scorer = RemoteScorer(limited.grpc_url, ScoreOptions(faces="all", sample=parse_policy("first:4")))
    rows = {r["path"]: r for r in scorer.score([big, ok])}
    assert rows[big]["error"]["type"] == "RequestLimitError" and "max_pixels" in rows[big]["error"]["message"]
    assert rows[ok]["error"] is None


@pytest.mark.triton
def test_over_max_cpu_s_is_refused_and_the_server_goes_on(cpu_limited, heavy_clip, videos):
    with DeepfakeClient(cpu_limited.grpc_url) as c:
        _good(c, videos["hevc"]["path"], sample="first:2")
        msg = _refused(c, heavy_clip, "max_cpu_s", "noise.mp4", sample="every:1000")
        assert f"limit of {CPU_S:g} CPU seconds per request" in msg
        _good(c, videos["hevc"]["path"], sample="first:2")


# --------------------------------------------------------------------------------------------- HTTP
def _url(srv: TritonServer, path: str) -> str:
    return f"http://{srv.host}:{srv.http_port}{path}"


def _http(srv: TritonServer, path: str, body=None, headers=None):
    """(status, parsed JSON or text) of an HTTP request to the server."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(_url(srv, path), data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read().decode() or "null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _json_infer(video: str, options: str) -> dict:
    """An HTTP JSON (not binary) inference request to deepfake_video."""
    return {"inputs": [{"name": "video", "shape": [1], "datatype": "BYTES", "data": [video]},
                       {"name": "options", "shape": [1], "datatype": "BYTES", "data": [options]}]}


@pytest.mark.triton
def test_http_inference_is_refused_by_default_and_grpc_works(limited):
    infer = "/v2/models/deepfake_video/infer"
    code, body = _http(limited, infer, _json_infer("x", '{"info": true}'))
    assert code == 403, (code, body)
    assert limited._http_key not in body
    code, _ = _http(limited, infer, _json_infer("v" * (5 << 20), '{"info": true}'))  # >= 4.5 MB: crashed 2.51
    assert code == 403
    code, _ = _http(limited, infer, _json_infer("x", '{"info": true}'), headers={HTTP_KEY_HEADER: "guess"})
    assert code == 403
    for path in ("/v2/systemsharedmemory/status", "/v2/logging", "/v2/trace/setting"):
        assert _http(limited, path)[0] == 403, path
    assert _http(limited, "/v2/repository/index", {})[0] == 403
    assert _http(limited, "/v2/repository/index", {}, headers=limited.http_headers)[0] == 200  # the launcher's way
    # open: health, metadata, model config, statistics
    assert _http(limited, "/v2/health/live")[0] == 200 and _http(limited, "/v2/health/ready")[0] == 200
    code, meta = _http(limited, "/v2/models/deepfake_video")
    assert code == 200 and meta["name"] == "deepfake_video"
    code, cfg = _http(limited, "/v2/models/deepfake_video/config")
    assert code == 200 and cfg["parameters"]["max_frames"]["string_value"] == "20"
    assert _http(limited, "/v2/models/deepfake_video/stats")[0] == 200
    with DeepfakeClient(limited.grpc_url) as c:  # gRPC inference is open
        assert c.model_info()["model_id"]
        assert c.is_ready()


@pytest.mark.triton
def test_http_inference_works_with_the_flag(cpu_limited):
    code, body = _http(cpu_limited, "/v2/models/deepfake_video/infer", _json_infer("", '{"info": true}'))
    assert code == 200, body
    assert json.loads(body["outputs"][0]["data"][0])["model_id"]
    assert _http(cpu_limited, "/v2/repository/index", {})[0] == 403  # the rest stays restricted


def test_the_launcher_restricts_http_unless_asked():
    from dfserve.cli import build_parser

    inst = TritonInstall(binary="tritonserver", backend_dir=None)  # type: ignore[arg-type]
    default, opened = TritonServer("repo"), TritonServer("repo", http_inference=True)
    flag = [a for a in default.command(inst) if a.startswith("--http-restricted-api=")]
    assert flag == [f"--http-restricted-api=inference,shared-memory,model-repository,trace,logging:"
                    f"{HTTP_KEY_HEADER}={default._http_key}"]
    assert len(default._http_key) >= 32 and default._http_key != opened._http_key
    assert (f"--http-restricted-api=shared-memory,model-repository,trace,logging:{HTTP_KEY_HEADER}="
            f"{opened._http_key}") in opened.command(inst)
    assert build_parser().parse_args(["serve", "--http-inference"]).http_inference is True
    assert build_parser().parse_args(["serve"]).http_inference is False
    for srv in (default, opened):
        srv.stop()  # never started: removes its work folder
