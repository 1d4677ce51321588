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
