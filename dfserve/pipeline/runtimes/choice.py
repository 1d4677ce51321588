"""Choosing a CPU runtime and precision (`--runtime`, `--precision`) — used by `dfserve score`, the bench and
the Triton cpu flavor's python models, so they all choose the same way.

`auto` is the fastest runtime installed that runs the asked precision: OpenVINO when it imports (measured
faster than onnxruntime at fp32 on the classifier and the detector, with logits within 1e-4 of it: see
README "Runtimes and precisions"), else onnxruntime. bf16 runs in OpenVINO only.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ... import spec
from ...errors import UsageError
from ..precisions import PRECISIONS

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "onnxruntime", "openvino", "torch")
CPU_RUNTIMES = ("onnxruntime", "openvino")
AUTO_ORDER = ("openvino", "onnxruntime")  # fastest first, by measurement (dfserve bench --runtimes)


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_runtime(runtime: str = "auto", precision: str = "fp32") -> str:
    """'auto' -> the fastest installed CPU runtime for `precision`; otherwise check the pair."""
    if runtime not in RUNTIMES:
        raise UsageError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if runtime == "auto":
        for rt in AUTO_ORDER:
            if rt == "openvino" and not openvino_available():
                continue
            if precision == "bf16" and rt != "openvino":
                continue
            return rt
        raise UsageError("--precision bf16 runs in OpenVINO, which is not installed: pip install 'dfserve[openvino]'")
    if runtime == "torch" and precision != "fp32":
        raise UsageError(f"--runtime torch runs fp32 on the CPU (fp16 on CUDA); --precision {precision} needs "
                         "--runtime openvino or onnxruntime")
    if runtime == "onnxruntime" and precision == "bf16":
        raise UsageError("--precision bf16 runs in OpenVINO only: use --runtime openvino")
    if runtime == "openvino" and not openvino_available():
        raise UsageError("--runtime openvino needs the openvino package: pip install 'dfserve[openvino]'")
    return runtime


def make_session(path: str | Path, runtime: str = "auto", precision: str = "fp32", threads: int | None = None,
                 output_names=None, mem_pattern: bool = True):
    """One network's `run(inputs dict) -> outputs dict` in the chosen runtime (the Triton python models' hook).

    `precision` is the compile precision of this network (fp32 / bf16: OpenVINO hint; an int8 file is a
    QDQ ONNX and runs with either runtime's int8 kernels). `mem_pattern`: onnxruntime's memory patterns
    (`ort_session`). `run.release()` gives the memory the runtime keeps between runs back (onnxruntime: its
    arena, `shrink_arena`, skipped while a run is in flight; OpenVINO: nothing).
    """
    from .ort import default_threads

    rt = resolve_runtime(runtime, precision)
    threads = int(threads or default_threads())
    if rt == "openvino":
        from .openvino import compile_onnx

        cm = compile_onnx(path, precision, threads)
        req = cm.create_infer_request()
        names = list(output_names or [o.get_any_name() for o in cm.outputs])
        outs = [cm.output(n) for n in names]

        def run(inputs):
            res = req.infer({k: v for k, v in inputs.items()})
            return {n: res[o] for n, o in zip(names, outs)}
        run.runtime = "openvino"
        run.release = lambda: None
        return run
    import threading

    from .ort import ort_session, shrink_arena

    sess = ort_session(path, threads, mem_pattern=mem_pattern)
    names = list(output_names or [o.name for o in sess.get_outputs()])
    lock = threading.Lock()
    busy = [0]

    def run(inputs):
        with lock:
            busy[0] += 1
        try:
            return dict(zip(names, sess.run(names, inputs)))
        finally:
            with lock:
                busy[0] -= 1

    def release():
        if not busy[0]:  # a run starting meanwhile is safe: only regions no tensor uses are freed
            shrink_arena(sess)
    run.runtime = "onnxruntime"
    run.release = release
    return run


def network_precision(classifier: bool, runtime: str, precision: str) -> str:
    """The compile precision of one network: the classifier runs `precision`; the detector has no int8 variant,
    so with bf16/int8 it runs bf16 in OpenVINO (fp32 in onnxruntime)."""
    if classifier or precision == "fp32":
        return precision
    return "bf16" if runtime == "openvino" else "fp32"


def make_network_session(version_dir: str | Path, classifier: bool, runtime: str = "auto", precision: str = "fp32",
                         threads: int | None = None, output_names=None, mem_pattern: bool = True):
    """A Triton version folder's network (`model.onnx`, or `model.int8.onnx` for the int8 classifier)."""
    rt = resolve_runtime(runtime, precision)
    name = "model.int8.onnx" if (classifier and precision == "int8") else "model.onnx"
    path = Path(version_dir) / name
    if not path.is_file():
        from ...errors import ModelFilesError

        raise ModelFilesError(f"{path}: missing (precision {precision}: `dfserve export --precision {precision}`, "
                              "then `dfserve repo build --models DIR`)")
    return make_session(path, rt, network_precision(classifier, rt, precision), threads, output_names, mem_pattern)
