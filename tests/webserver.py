"""A real `dfserve web` server (uvicorn) in a subprocess on a free loopback port, for the web tests."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebServer:
    def __init__(self, models, data_dir, *extra, token=None, port=None):
        self.models, self.data_dir, self.extra, self.token = Path(models), Path(data_dir), extra, token
        self.port = port or free_port()
        self.proc = None
        self.log = self.data_dir.parent / f"{self.data_dir.name}-server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> "WebServer":
        import httpx

        cmd = [sys.executable, "-m", "dfserve.cli", "web", "--port", str(self.port), "--models", str(self.models),
               "--data-dir", str(self.data_dir), *map(str, self.extra)]
        if self.token:
            cmd += ["--token", self.token]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._logf, stderr=subprocess.STDOUT, env=dict(os.environ))
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dfserve web exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"dfserve web not ready after {timeout} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._logf.close()

    def stop(self) -> bool:
        """SIGTERM, as a service manager stops it; True when uvicorn shut the app down cleanly."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(timeout=10)
        self._logf.close()
        # uvicorn re-raises the signal after its graceful shutdown, so the exit status is -SIGTERM
        return rc in (0, -signal.SIGTERM) and "Application shutdown complete" in self.log_tail(20)

    def client(self, token=None):
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def wait_job(client, job_id: str, timeout: float = 180.0, until=("done", "failed")) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = client.get(f"/v1/jobs/{job_id}")
        r.raise_for_status()
        job = r.json()
        if job["status"] in until:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")
