"""Start a real tritonserver on a model repository and wait until it is ready.

On machines without NVIDIA's container, the binary comes from the `nvidia-pytriton` wheel
(tritonserver 2.51, python backend only); `tritonserver` on PATH (as in NVIDIA's container) is
used when there is one. The python backend's stub needs: a backend folder with the stub copied
into `python/`, the wheel's bundled libraries and the interpreter's LIBDIR on LD_LIBRARY_PATH,
and this interpreter's bin folder first on PATH (the stub finds site-packages through python3).

Triton's HTTP endpoint is restricted by default: inference, shared-memory, model-repository, trace and
logging requests over HTTP need a header whose value is random per start and known only to this
launcher (tritonserver --http-restricted-api); health, metadata, model config and statistics stay
open, and clients use gRPC. (tritonserver 2.51 crashes on an HTTP JSON request with a BYTES input of
4.5 MB or more.) `http_inference=True` opens HTTP inference again.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import MissingDependencyError, ServerError
from .memory import MALLOC_ARENA_MAX

log = logging.getLogger(__name__)

# HTTP APIs that need the launcher's header (tritonserver --http-restricted-api=<apis>:<key>=<value>)
RESTRICTED_HTTP_APIS = ("inference", "shared-memory", "model-repository", "trace", "logging")
HTTP_KEY_HEADER = "dfserve-launcher-key"
# Folders put first on the PYTHONPATH of tritonserver and its python models only: the python backend of
# tritonserver 2.51 needs numpy<2 (with numpy 2 its outputs come back empty), which a GPU machine's own
# python (numpy 2) can get this way without changing the launcher's or the client's numpy.
MODELS_PYTHONPATH_ENV = "DFSERVE_TRITON_PYTHONPATH"


def repo_uses_gpu(repo: Path) -> bool:
    """Whether any model of a repository runs on the GPU (a gpu flavor: KIND_GPU instance groups)."""
    return any("KIND_GPU" in p.read_text(errors="replace") for p in Path(repo).glob("*/config.pbtxt"))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class TritonInstall:
    binary: Path
    backend_dir: Optional[Path]  # None: the binary's own default (NVIDIA's container)
    env: dict = field(default_factory=dict)
    source: str = ""


def _pytriton_install(work: Path) -> TritonInstall:
    import importlib.util

    # located, not imported: the binary is all that is used, and pytriton's own package imports its client
    # stack (zmq, wrapt, ...), which a machine that only serves need not have
    found = importlib.util.find_spec("pytriton")
    if found is None or not found.submodule_search_locations:
        raise MissingDependencyError("no tritonserver on PATH and the 'nvidia-pytriton' wheel is not installed; "
                                     "install it with: pip install 'dfserve[serve]'")
    pkg = Path(list(found.submodule_search_locations)[0])
    root = pkg / "tritonserver"
    binary = root / "bin" / "tritonserver"
    libs = pkg.parent / "nvidia_pytriton.libs"
    pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / pyver / "triton_python_backend_stub"
    if not binary.is_file() or not stub.is_file():
        raise ServerError(f"nvidia-pytriton at {root} lacks the tritonserver binary or a python {pyver} stub")
    backends = work / "backends"
    if not (backends / "python" / "triton_python_backend_stub").is_file():
        if backends.exists():
            shutil.rmtree(backends)
        shutil.copytree(root / "backends", backends)
        shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ld = ":".join(p for p in (str(libs), libdir, os.environ.get("LD_LIBRARY_PATH", "")) if p)
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return TritonInstall(binary, backends, {"LD_LIBRARY_PATH": ld, "PATH": path}, "nvidia-pytriton")


def find_triton(work: Path) -> TritonInstall:
    on_path = shutil.which("tritonserver")
    if on_path:
        return TritonInstall(Path(on_path), None, {}, "PATH")
    return _pytriton_install(work)


class TritonServer:
    """A tritonserver child process. Use as a context manager, or start()/stop()."""

    def __init__(self, repo: str | Path, grpc_port: int = 0, http_port: int = 0, metrics_port: int = 0,
                 host: str = "127.0.0.1", log_verbose: int = 0, extra_args: Optional[List[str]] = None,
                 startup_timeout: float = 120.0, shm_sweep_s: float = 5.0, http_inference: bool = False,
                 cuda_pool_mb: int = 2048):
        self.repo = Path(repo).resolve()
        self.cuda_pool_mb = cuda_pool_mb
        self.http_inference = http_inference
        self._http_key = secrets.token_urlsafe(32)  # this start's value of HTTP_KEY_HEADER
        self.shm_sweep_s = shm_sweep_s
        self._sweeper: Optional[threading.Thread] = None
        self._sweep_stop = threading.Event()
        self.host = host
        self.grpc_port = grpc_port or free_port(host)
        self.http_port = http_port or free_port(host)
        self.metrics_port = metrics_port or free_port(host)
        self.log_verbose = log_verbose
        self.extra_args = extra_args or []
        self.startup_timeout = startup_timeout
        self.proc: Optional[subprocess.Popen] = None
        self._work = Path(tempfile.mkdtemp(prefix="dfserve-triton-"))
        self._log: deque = deque(maxlen=400)
        self._reader: Optional[threading.Thread] = None
        self._shm_before = set()

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def restricted_http_apis(self) -> List[str]:
        return [a for a in RESTRICTED_HTTP_APIS if not (a == "inference" and self.http_inference)]

    @property
    def http_headers(self) -> Dict[str, str]:
        """The header that lets a request through the restricted HTTP APIs (for this launcher and tests)."""
        return {HTTP_KEY_HEADER: self._http_key}

    def _http(self, path: str, data: Optional[bytes] = None, method: Optional[str] = None, timeout: float = 5.0):
        """An HTTP request to this server, with the launcher's header."""
        headers = dict(self.http_headers, **({"Content-Type": "application/json"} if data else {}))
        req = urllib.request.Request(f"http://{self.host}:{self.http_port}{path}", data=data, method=method,
                                     headers=headers)
        return urllib.request.urlopen(req, timeout=timeout)

    def _repo_path(self) -> Path:
        """The python backend stub splits its arguments on spaces: serve such a repo through a link."""
        if " " not in str(self.repo):
            return self.repo
        link = self._work / "model_repository"
        if not link.exists():
            link.symlink_to(self.repo, target_is_directory=True)
        return link

    def _python_with_path(self, pythonpath: str) -> Path:
        """The bin folder of a small virtual environment whose python sees `pythonpath` first.

        The python backend's stub runs an embedded interpreter that ignores the environment (PYTHONPATH
        included) and takes its `sys.executable` from the `python3` on PATH; `site` then reads that
        executable's pyvenv.cfg. So the launcher's extra folders reach the python models through a venv
        (system site-packages on) whose one .pth file adds them, then this interpreter's own site-packages
        (with their .pth files, editable installs included). Seen on a GPU machine whose models' packages
        were carried into a folder ('No module named av' with PYTHONPATH set)."""
        import site

        env_dir = self._work / "models-venv"
        ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
        bin_dir = env_dir / "bin"
        sp = env_dir / "lib" / ver / "site-packages"
        bin_dir.mkdir(parents=True, exist_ok=True)
        sp.mkdir(parents=True, exist_ok=True)
        real = Path(sys.executable).resolve()
        (env_dir / "pyvenv.cfg").write_text(f"home = {real.parent}\ninclude-system-site-packages = true\n"
                                            f"version = {sys.version.split()[0]}\n")
        for name in ("python3", ver, "python"):
            link = bin_dir / name
            if not link.exists():
                link.symlink_to(real)
        dirs = [p for p in pythonpath.split(os.pathsep) if p] + list(site.getsitepackages())
        (sp / "dfserve-models-path.pth").write_text(f"import site; list(map(site.addsitedir, {dirs!r}))\n")
        return bin_dir

    def command(self, inst: TritonInstall) -> List[str]:
        cmd = [str(inst.binary), f"--model-repository={self._repo_path()}", f"--grpc-port={self.grpc_port}",
               f"--http-port={self.http_port}", f"--metrics-port={self.metrics_port}",
               f"--grpc-address={self.host}", f"--http-address={self.host}", f"--metrics-address={self.host}",
               "--exit-on-error=false", "--strict-readiness=true", f"--log-verbose={self.log_verbose}",
               f"--http-restricted-api={','.join(self.restricted_http_apis)}:{HTTP_KEY_HEADER}={self._http_key}"]
        if inst.backend_dir is not None:
            cmd.append(f"--backend-directory={inst.backend_dir}")
        if self.cuda_pool_mb and repo_uses_gpu(self.repo) and not any("cuda-memory-pool" in a for a in self.extra_args):
            # GPU tensors between the python models (DLPack) live in this pool: 1080p chunks need far more than
            # Triton's 64 MB default
            cmd.append(f"--cuda-memory-pool-byte-size=0:{self.cuda_pool_mb << 20}")
        return cmd + self.extra_args

    def start(self) -> "TritonServer":
        if not (self.repo.is_dir()):
            raise ServerError(f"model repository {self.repo} does not exist; create it with `dfserve repo build`")
        inst = find_triton(self._work)
        env = {**os.environ, **inst.env}
        models_path = os.environ.get(MODELS_PYTHONPATH_ENV)
        if models_path:  # folders first on the python models' path only (e.g. numpy<2 where the launcher has 2)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (models_path, env.get("PYTHONPATH", "")) if p)
        if env.get("PYTHONPATH") and inst.backend_dir is not None:
            env["PATH"] = os.pathsep.join([str(self._python_with_path(env["PYTHONPATH"])), env["PATH"]])
        env.setdefault("MALLOC_ARENA_MAX", MALLOC_ARENA_MAX)  # tritonserver and its python models (memory.py)
        self._shm_before = set(glob.glob("/dev/shm/triton_python_backend_shm_region_*"))
        cmd = self.command(inst)
        log.info("starting tritonserver (%s): %s", inst.source, " ".join(cmd).replace(self._http_key, "<random>"))
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     errors="replace", start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_ready()
        if self.shm_sweep_s > 0:
            self._sweep_stop.clear()
            self._sweeper = threading.Thread(target=self._sweep_loop, daemon=True, name="dfserve-shm-sweep")
            self._sweeper.start()
        return self

    # ----------------------------------------------------------------- shared memory of dead clients
    def _sweep_loop(self) -> None:
        while not self._sweep_stop.wait(self.shm_sweep_s):
            try:
                self.sweep_dead_client_regions()
            except Exception:  # noqa: BLE001 - the sweep never takes the server down
                log.debug("shared-memory sweep failed", exc_info=True)

    def sweep_dead_client_regions(self) -> List[str]:
        """Unregister (and unlink) the shared-memory regions of dfserve clients that died without releasing
        them (killed with -9). dfserve clients name their regions `dfserve-<pid>-<random>`; shared memory is
        local to this host, so a pid that no longer exists here is a dead client. Others' regions are left."""
        removed = []
        for kind in ("systemsharedmemory", "cudasharedmemory"):
            try:
                with self._http(f"/v2/{kind}/status") as r:
                    regions = json.loads(r.read().decode() or "[]")
            except (OSError, ValueError):
                continue
            for reg in regions if isinstance(regions, list) else []:
                name = str(reg.get("name", ""))
                pid = _client_pid(name)
                if pid is None or _pid_alive(pid):
                    continue
                try:
                    self._http(f"/v2/{kind}/region/{name}/unregister", data=b"", method="POST").close()
                except OSError:
                    continue
                key = str(reg.get("key", "")).lstrip("/")
                if kind == "systemsharedmemory" and key and "/" not in key:
                    try:
                        os.unlink(f"/dev/shm/{key}")
                    except OSError:
                        pass
                log.warning("released shared memory %s of client pid %d, which exited without releasing it", name, pid)
                removed.append(name)
        return removed

    def _read(self):
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.append(line.rstrip())
            if self.log_verbose:
                log.debug("tritonserver: %s", line.rstrip())

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(list(self._log)[-n:])

    def model_failures(self) -> List[str]:
        return [ln for ln in self._log if "failed to load" in ln or "UNAVAILABLE" in ln and "model" in ln.lower()]

    def _http_ok(self, path: str) -> bool:
        try:
            with self._http(path, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def is_ready(self) -> bool:
        return self._http_ok("/v2/health/ready")

    def model_states(self) -> dict:
        """{model: (state, reason)} from the repository index (every model folder, loaded or not)."""
        with self._http("/v2/repository/index", data=b"{}", method="POST") as r:
            items = json.loads(r.read().decode())
        return {m["name"]: (m.get("state", ""), m.get("reason", "")) for m in items}

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            states = {}
            if self.proc is not None and self.proc.poll() is not None:
                time.sleep(0.2)
                raise ServerError(self._failure_message(f"tritonserver exited with status {self.proc.returncode}"))
            if self._http_live():
                try:
                    states = self.model_states()
                except (OSError, ValueError):
                    states = {}
                bad = {k: v for k, v in states.items() if v[0] == "UNAVAILABLE"}
                if bad:
                    self.stop()
                    raise ServerError("models failed to load (repository " + str(self.repo) + "):\n" + "\n".join(
                        f"  {k}: {reason or 'unavailable'}" for k, (_, reason) in sorted(bad.items())))
            if self.is_ready() and states and all(v[0] == "READY" for v in states.values()):
                log.info("tritonserver ready: gRPC %s, HTTP %s:%d, metrics %s:%d", self.grpc_url, self.host,
                         self.http_port, self.host, self.metrics_port)
                return
            time.sleep(0.2)
        self.stop()
        raise ServerError(self._failure_message(f"tritonserver not ready after {self.startup_timeout:.0f} s"))

    def _http_live(self) -> bool:
        return self._http_ok("/v2/health/live")

    def _failure_message(self, what: str) -> str:
        fails = self.model_failures()
        detail = ("\n".join(fails[-10:]) if fails else self.log_tail(40))
        return f"{what} (repository {self.repo}):\n{detail}"

    def stop(self, timeout: float = 20.0) -> None:
        self._sweep_stop.set()
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(timeout=timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        self.proc = None
        for f in set(glob.glob("/dev/shm/triton_python_backend_shm_region_*")) - self._shm_before:
            try:
                os.unlink(f)
            except OSError:
                pass
        shutil.rmtree(self._work, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _client_pid(region: str) -> Optional[int]:
    parts = region.split("-")
    if len(parts) >= 3 and parts[0] == "dfserve" and parts[1].isdigit():
        return int(parts[1])
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
