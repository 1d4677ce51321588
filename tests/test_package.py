"""Skeleton: one importable name, a torch-free client, the console script."""
import subprocess
import sys

import pytest


def test_client_import_does_not_import_torch():
    code = ("import sys, dfserve.client; heavy = [m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, f"dfserve.client imported {r.stdout} {r.stderr}"


@pytest.mark.parametrize("mod", ["dfserve.export", "dfserve.pipeline", "dfserve.client", "dfserve.spec"])
def test_subpackages_import(mod):
    __import__(mod)


def test_cli_help_lists_subcommands():
    r = subprocess.run([sys.executable, "-m", "dfserve.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    assert "export" in r.stdout


def test_export_refuses_without_checkpoint(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dfserve.cli", "export", "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "--random-init --seed" in r.stderr
    r = subprocess.run([sys.executable, "-m", "dfserve.cli", "export", "--random-init", "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--seed" in r.stderr
    assert not any(tmp_path.iterdir())


def test_gpu_extra_pins_nothing_tied_to_one_cuda_major():
    """The `gpu` extra (issue 25): no CUDA-major-specific wheel (cupy-cuda12x was wrong on CUDA 13 machines and
    imported by nothing), and every package it lists is imported by dfserve."""
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    gpu = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    names = [re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower() for req in gpu]
    assert not [n for n in names if re.search(r"cuda\d|cu\d\d", n)], gpu
    imports = {"pynvvideocodec": "PyNvVideoCodec"}
    source = "\n".join(p.read_text() for p in (root / "dfserve").rglob("*.py"))
    for n in names:
        assert re.search(rf"import {imports.get(n, n)}\b|from {imports.get(n, n)}\b", source), f"{n}: imported by nothing"


def test_make_bench_runs_the_web_soak():
    """Issue 25: the 8-client web soak is part of `make bench` (its figures land in benchmarks/results/<machine>/)."""
    from pathlib import Path

    make = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    recipe = make.split("\nbench: ", 1)[1].split("\n\n", 1)[0]
    assert "benchmarks/web_soak.py" in recipe and "--clients 8" in recipe and "--duration $(SOAK_S)" in recipe
