"""`dfserve doctor`: what this machine can run, and therefore which dfserve options will work here.

It looks (never installs): CUDA devices through torch, the driver and compute capability through
nvidia-smi, NVDEC (PyNvVideoCodec imports, then decodes a small generated H.264 clip), TensorRT,
onnxruntime's execution providers, OpenVINO's devices, the tritonserver binaries dfserve would
start (PATH first, then the nvidia-pytriton wheel, as `dfserve serve` does) and their backends.
Then it maps the facts to the `score` / `export` / `repo build` / `serve` options that will work.

    dfserve doctor            human-readable report
    dfserve doctor --json     the same facts, machine-readable
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

# -------------------------------------------------------------------------------------------- probes


def _version(dist: str) -> Optional[str]:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # noqa: BLE001 - not installed
        return None


def _import(name: str):
    """(module or None, reason): import errors are facts here, never failures of the doctor."""
    try:
        found = importlib.util.find_spec(name)
    except ModuleNotFoundError:  # a dotted name whose parent package is missing (tritonclient.grpc)
        found = None
    if found is None:
        return None, f"{name.split('.')[0]} is not installed"
    try:
        return importlib.import_module(name), ""
    except Exception as exc:  # noqa: BLE001 - e.g. a GPU-only package on a machine without a driver
        return None, f"{name} does not import: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def probe_torch() -> Dict[str, Any]:
    torch, why = _import("torch")
    if torch is None:
        return {"installed": False, "reason": why, "cuda_available": False, "devices": []}
    out: Dict[str, Any] = {"installed": True, "version": torch.__version__, "cuda_build": torch.version.cuda,
                           "cuda_available": bool(torch.cuda.is_available()), "devices": []}
    if out["cuda_available"]:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out["devices"].append({"index": i, "name": p.name, "compute_capability": f"{p.major}.{p.minor}",
                                   "memory_gib": round(p.total_memory / 2**30, 1),
                                   "multiprocessors": p.multi_processor_count})
    else:
        out["reason"] = ("a CPU build of torch (no CUDA)" if torch.version.cuda is None
                         else "torch is a CUDA build but sees no GPU (no NVIDIA driver or device)")
    return out


def probe_nvidia_smi() -> Dict[str, Any]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {"found": False, "reason": "nvidia-smi is not on PATH (no NVIDIA driver installed here)", "gpus": []}
    fields = "name,driver_version,compute_cap,memory.total"
    try:
        r = subprocess.run([exe, f"--query-gpu={fields}", "--format=csv,noheader"], capture_output=True, text=True,
                           timeout=20)
    except Exception as exc:  # noqa: BLE001
        return {"found": True, "path": exe, "reason": f"nvidia-smi failed: {exc}", "gpus": []}
    if r.returncode != 0:
        return {"found": True, "path": exe, "reason": (r.stderr or r.stdout).strip()[:300], "gpus": []}
    gpus = []
    for line in r.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 4:
            gpus.append({"name": parts[0], "driver": parts[1], "compute_capability": parts[2], "memory": parts[3]})
    return {"found": True, "path": exe, "driver": gpus[0]["driver"] if gpus else None, "gpus": gpus}


def _tiny_clip(path: Path, codec: str = "libx264", frames: int = 12, size=(256, 144)) -> None:
    import av
    import numpy as np

    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
        for k in range(frames):
            img = np.zeros((size[1], size[0], 3), np.uint8)
            img[:, : (k * 16) % size[0] + 16] = (40 * k % 255, 120, 200)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


@contextlib.contextmanager
def _stdout_to_stderr():
    """Send file descriptor 1 to stderr for a while: native libraries print there, around Python."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def probe_nvdec(torch_info: Dict[str, Any], decode_test: bool = True) -> Dict[str, Any]:
    from .pipeline.gpu_scorer import nvdec_status

    ok, why = nvdec_status()
    out: Dict[str, Any] = {"available": ok, "reason": why, "pynvvideocodec": _version("pynvvideocodec")}
    if not ok or not decode_test:
        return out
    t = time.perf_counter()
    try:
        import PyNvVideoCodec as nvc
        import torch

        with tempfile.TemporaryDirectory(prefix="dfserve-doctor-") as d:
            clip = Path(d) / "tiny clip.mp4"
            _tiny_clip(clip)
            with _stdout_to_stderr():  # PyNvVideoCodec prints warnings on fd 1: keep --json clean
                dec = nvc.SimpleDecoder(str(clip), gpu_id=0, use_device_memory=True,
                                        output_color_type=nvc.OutputColorType.RGB)
                # ask for no more than the clip holds: past its end the decoder warns once per index
                frames = dec.get_batch_frames(max(1, min(64, len(dec))))
            batch = torch.stack([torch.from_dlpack(f) for f in frames])
            out["decode_test"] = {"ok": len(frames) == 12, "frames": len(frames), "expected": 12,
                                  "shape": list(batch.shape), "device": str(batch.device),
                                  "seconds": round(time.perf_counter() - t, 3)}
            if len(frames) != 12:
                out["available"] = False
                out["reason"] = f"NVDEC decoded {len(frames)} of the 12 frames of a generated H.264 clip"
    except Exception as exc:  # noqa: BLE001
        out["available"] = False
        out["reason"] = f"NVDEC could not decode a generated H.264 clip: {type(exc).__name__}: {exc}"
        out["decode_test"] = {"ok": False, "error": str(exc)[:300]}
    return out


def probe_tensorrt() -> Dict[str, Any]:
    trt, why = _import("tensorrt")
    out: Dict[str, Any] = {"installed": trt is not None, "trtexec": shutil.which("trtexec")}
    if trt is None:
        out["reason"] = why + " (NVIDIA's wheel or container; it cannot be installed on CPU-only machines)"
        return out
    out["version"] = getattr(trt, "__version__", "?")
    out["fp16_flag"] = hasattr(trt.BuilderFlag, "FP16")  # removed in TensorRT 11 (strongly typed only)
    out["int8_calibrator"] = hasattr(trt, "IInt8EntropyCalibrator2")  # removed in TensorRT 11
    return out


def probe_onnxruntime() -> Dict[str, Any]:
    ort, why = _import("onnxruntime")
    if ort is None:
        return {"installed": False, "reason": why, "providers": []}
    return {"installed": True, "version": ort.__version__, "providers": list(ort.get_available_providers())}


def probe_openvino() -> Dict[str, Any]:
    ov, why = _import("openvino")
    if ov is None:
        return {"installed": False, "reason": why, "devices": []}
    try:
        devices = list(ov.Core().available_devices)
    except Exception as exc:  # noqa: BLE001
        return {"installed": True, "version": _version("openvino"), "devices": [], "reason": str(exc)[:200]}
    return {"installed": True, "version": _version("openvino"), "devices": devices}


def probe_cpu_threads() -> Dict[str, Any]:
    """The CPU cores this process may use and the threads each network gets when both run at once (issue 23)."""
    from .pipeline.precisions import PRECISIONS
    from .pipeline.runtimes.ort import MODEL_THREADS_ENV, default_threads, model_threads

    cores = default_threads()
    try:
        per = {p: model_threads(cores, p) for p in PRECISIONS}
    except Exception as exc:  # noqa: BLE001 - a bad $DFSERVE_MODEL_THREADS is reported, not raised
        return {"cores": cores, "reason": str(exc)[:200]}
    det, cls = per["fp32"]
    return {"cores": cores, "detector": det, "classifier": cls,
            "per_precision": {p: {"detector": d, "classifier": c} for p, (d, c) in per.items()},
            "override": os.environ.get(MODEL_THREADS_ENV) or None}


def _backends(folder: Optional[Path]) -> List[str]:
    if folder is None or not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def probe_triton() -> Dict[str, Any]:
    """The binaries `dfserve serve` would use (serving/server.py: PATH first, then the nvidia-pytriton
    wheel) and the backends each one has."""
    found: List[Dict[str, Any]] = []
    on_path = shutil.which("tritonserver")
    if on_path:
        p = Path(on_path).resolve()
        # NVIDIA's container: /opt/tritonserver/bin/tritonserver with /opt/tritonserver/backends
        bdir = p.parent.parent / "backends"
        found.append({"source": "PATH", "path": str(p), "backend_dir": str(bdir), "backends": _backends(bdir)})
    spec_ = importlib.util.find_spec("pytriton")
    if spec_ is not None and spec_.origin:
        root = Path(spec_.origin).parent / "tritonserver"
        binary = root / "bin" / "tritonserver"
        pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = root / "python_backend_stubs" / pyver / "triton_python_backend_stub"
        if binary.is_file():
            found.append({"source": "nvidia-pytriton", "version": _version("nvidia-pytriton"), "path": str(binary),
                          "backend_dir": str(root / "backends"), "backends": _backends(root / "backends"),
                          "python_stub": str(stub) if stub.is_file() else None})
    tc, why = _import("tritonclient.grpc")
    client = {"installed": tc is not None, "version": _version("tritonclient")}
    if tc is None:
        client["reason"] = why
    return {"servers": found, "used_by_serve": found[0]["source"] if found else None, "client": client}


def probe_cuda_shm(torch_info: Dict[str, Any]) -> Dict[str, Any]:
    if importlib.util.find_spec("tritonclient") is None:
        return {"available": False, "reason": "tritonclient is not installed"}
    mod, why = _import("tritonclient.utils.cuda_shared_memory")
    if mod is None:
        return {"available": False, "reason": why + " (pip install 'tritonclient[cuda]', which adds cuda-python)"}
    if not torch_info.get("cuda_available"):
        return {"available": False, "reason": "no CUDA device"}
    return {"available": True, "reason": "tritonclient.utils.cuda_shared_memory imports and a GPU is present"}


def _runtime_choices() -> List[str]:
    """The --runtime choices `dfserve score` accepts in this version (the runtime registry)."""
    from .models import runtime_choices

    return list(runtime_choices())


# --------------------------------------------------------------------------------- what will work


def _w(ok: bool, why: str) -> Dict[str, Any]:
    return {"ok": bool(ok), "why": why}


def what_works(f: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    t, nv, trt, ort, ov, tri = f["torch"], f["nvdec"], f["tensorrt"], f["onnxruntime"], f["openvino"], f["triton"]
    cuda = bool(t.get("cuda_available"))
    cpu_ep = "CPUExecutionProvider" in ort.get("providers", [])
    choices = f.get("score_runtime_choices", [])
    w: Dict[str, Dict[str, Any]] = {}
    w["score --device cpu"] = _w(cpu_ep, "onnxruntime CPUExecutionProvider" if cpu_ep
                                 else ort.get("reason", "onnxruntime has no CPUExecutionProvider"))
    w["score --device cpu --runtime torch"] = _w(t.get("installed"), f"torch {t.get('version')} (fp32 on the CPU)"
                                                 if t.get("installed") else t.get("reason", ""))
    if "openvino" in choices:
        w["score --device cpu --runtime openvino"] = _w(ov.get("installed") and "CPU" in ov.get("devices", []),
                                                        f"OpenVINO {ov.get('version')} devices {ov.get('devices')}"
                                                        if ov.get("installed") else ov.get("reason", ""))
    w["score --device cuda"] = _w(cuda, (f"torch fp16 + CUDA graphs on {t['devices'][0]['name']}; decoder "
                                         + ("NVDEC" if nv.get("available") else "PyAV + upload (" + nv.get("reason", "") + ")"))
                                  if cuda else "torch.cuda.is_available() is False: " + t.get("reason", ""))
    w["score --device cuda (NVDEC decode)"] = _w(cuda and nv.get("available"), nv.get("reason", ""))
    trt_ok = trt.get("installed") and cuda
    trt_why = (f"TensorRT {trt.get('version')}" if trt.get("installed") else trt.get("reason", "")) + \
        ("" if cuda else "; and no CUDA device")
    w["export --tensorrt"] = _w(trt_ok, trt_why)
    w["export --tensorrt --fp16"] = _w(trt_ok and trt.get("fp16_flag", False),
                                       trt_why if not trt_ok else ("BuilderFlag.FP16 present" if trt.get("fp16_flag")
                                                                   else "TensorRT >= 11 is strongly typed: no FP16 flag"))
    w["export --tensorrt --int8"] = _w(trt_ok and trt.get("int8_calibrator", False),
                                       trt_why if not trt_ok else ("IInt8EntropyCalibrator2 present"
                                                                   if trt.get("int8_calibrator")
                                                                   else "TensorRT >= 11 has no implicit INT8 calibration"))
    client = tri["client"]["installed"]
    w["repo build --flavor cpu"] = _w(client, "configs from tritonclient's model_config protobuf" if client
                                      else "needs tritonclient (pip install 'dfserve[serve]')")
    for fl in ("gpu", "gpu-tensorrt"):
        w[f"repo build --flavor {fl}"] = _w(client, f"writes the configs (to serve them: see 'serve ({fl} flavor)')"
                                            if client else "needs tritonclient (pip install 'dfserve[serve]')")
    servers = tri["servers"]
    first = servers[0] if servers else None
    py_ok = bool(first and "python" in first["backends"] and (first["source"] == "PATH" or first.get("python_stub")))
    w["serve (cpu flavor)"] = _w(py_ok, f"tritonserver from {first['source']} with backends {first['backends']}"
                                 if first else "no tritonserver on PATH and no nvidia-pytriton wheel")
    w["serve (gpu flavor)"] = _w(py_ok and cuda, "python-backend models with torch on the GPU: needs a CUDA torch and "
                                 "a tritonserver with the python backend (found: "
                                 f"{first['source'] + ' ' + str(first['backends']) if first else 'none'}; "
                                 f"GPU: {'yes' if cuda else 'no'})")
    gpu_backends = bool(first and "tensorrt" in first["backends"] and "python" in first["backends"])
    w["serve (gpu-tensorrt flavor)"] = _w(gpu_backends and cuda and trt_ok,
                                 "needs a GPU, TensorRT plans and a tritonserver with the tensorrt and python backends "
                                 f"(found: {first['source'] + ' ' + str(first['backends']) if first else 'none'}; "
                                 f"GPU: {'yes' if cuda else 'no'}; TensorRT: {'yes' if trt.get('installed') else 'no'})")
    w["client shared_memory='cuda'"] = _w(f["cuda_shared_memory"]["available"], f["cuda_shared_memory"]["reason"])
    return w


def collect(decode_test: bool = True) -> Dict[str, Any]:
    from . import __version__

    t0 = time.perf_counter()
    f: Dict[str, Any] = {"dfserve": __version__, "python": sys.version.split()[0], "platform": sys.platform,
                         "machine": os.uname().machine if hasattr(os, "uname") else None}
    f["torch"] = probe_torch()
    f["nvidia_smi"] = probe_nvidia_smi()
    f["nvdec"] = probe_nvdec(f["torch"], decode_test)
    f["tensorrt"] = probe_tensorrt()
    f["onnxruntime"] = probe_onnxruntime()
    f["openvino"] = probe_openvino()
    f["triton"] = probe_triton()
    f["cuda_shared_memory"] = probe_cuda_shm(f["torch"])
    f["pyav"] = _version("av")
    f["cpu_threads"] = probe_cpu_threads()
    f["score_runtime_choices"] = _runtime_choices()
    f["works"] = what_works(f)
    f["seconds"] = round(time.perf_counter() - t0, 2)
    return f


# --------------------------------------------------------------------------------------- printing


def render(f: Dict[str, Any]) -> str:
    t, smi, nv, trt, ort, ov, tri = (f["torch"], f["nvidia_smi"], f["nvdec"], f["tensorrt"], f["onnxruntime"],
                                     f["openvino"], f["triton"])
    L = [f"dfserve {f['dfserve']} doctor — Python {f['python']} on {f['platform']}/{f['machine']}", ""]
    if t.get("installed"):
        L.append(f"torch          {t['version']} (CUDA build: {t['cuda_build'] or 'no'}); "
                 f"CUDA available: {'yes' if t['cuda_available'] else 'no'}"
                 + ("" if t["cuda_available"] else f" — {t.get('reason', '')}"))
        for d in t["devices"]:
            L.append(f"  cuda:{d['index']}        {d['name']}, compute capability {d['compute_capability']}, "
                     f"{d['memory_gib']} GiB, {d['multiprocessors']} SMs")
    else:
        L.append(f"torch          not available: {t.get('reason')}")
    if smi["found"] and smi["gpus"]:
        for g in smi["gpus"]:
            L.append(f"nvidia-smi     {g['name']}: driver {g['driver']}, compute capability {g['compute_capability']}, "
                     f"{g['memory']}")
    else:
        L.append(f"nvidia-smi     {smi.get('reason')}")
    dt = nv.get("decode_test")
    L.append(f"NVDEC          {'yes' if nv['available'] else 'no'}: {nv['reason']}"
             + (f"; decoded {dt['frames']}/{dt.get('expected')} frames of a generated H.264 clip in {dt['seconds']} s"
                if dt and dt.get("ok") else ""))
    L.append(f"TensorRT       {trt['version'] if trt['installed'] else 'no: ' + trt['reason']}"
             + (f"; trtexec {trt['trtexec']}" if trt.get("trtexec") else ""))
    L.append(f"onnxruntime    {ort['version'] + ' providers ' + ', '.join(ort['providers']) if ort['installed'] else 'no: ' + ort['reason']}")
    L.append(f"OpenVINO       {ov['version'] + ' devices ' + ', '.join(ov['devices']) if ov['installed'] else 'no: ' + ov['reason']}")
    if tri["servers"]:
        for s in tri["servers"]:
            L.append(f"tritonserver   [{s['source']}] {s['path']}; backends: {', '.join(s['backends']) or 'none found'}")
    else:
        L.append("tritonserver   none (no tritonserver on PATH, no nvidia-pytriton wheel)")
    c = tri["client"]
    L.append(f"tritonclient   {c['version'] if c['installed'] else 'no: ' + c.get('reason', '')}; CUDA shared memory: "
             f"{'yes' if f['cuda_shared_memory']['available'] else 'no (' + f['cuda_shared_memory']['reason'] + ')'}")
    L.append(f"PyAV           {f['pyav'] or 'not installed'}")
    ct = f.get("cpu_threads")
    if ct:
        L.append(f"CPU threads    {ct['cores']} cores; " + (
            "OpenVINO detector + classifier threads (the two run at the same time; $DFSERVE_MODEL_THREADS=D,C "
            "changes it): " + ", ".join(f"{p} {t['detector']} + {t['classifier']}"
                                        for p, t in ct.get("per_precision", {}).items())
            + (", from $DFSERVE_MODEL_THREADS=" + str(ct["override"]) if ct.get("override") else "")
            if "detector" in ct else f"bad $DFSERVE_MODEL_THREADS: {ct['reason']}"))
    L += ["", "What will work here:"]
    width = max(len(k) for k in f["works"])
    for k, v in f["works"].items():
        L.append(f"  [{'yes' if v['ok'] else ' no'}] dfserve {k.ljust(width)}  {v['why']}")
    return "\n".join(L)


def run(args) -> int:
    f = collect(decode_test=not getattr(args, "no_decode_test", False))
    if getattr(args, "json", False):
        print(json.dumps(f, indent=2, default=str))
    else:
        print(render(f))
    return 0
