"""benchmarks/gpu/run.sh: its dry run (install plan, commands, result layout) works on a CPU machine."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "gpu" / "run.sh"


def dry(*args, results):
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(results)}
    return subprocess.run(["bash", str(RUN), *args, "--dry-run", "--results", str(results)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120)


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path):
    out_dir = tmp_path / "results dir"
    r = dry("all", results=out_dir)
    assert r.returncode == 0, r.stderr
    o = r.stdout
    assert "DRY RUN" in o
    for step in ("== step1", "== step2"):
        assert step in o
    assert "install plan (step1):" in o and "install plan (step2):" in o
    for mod in ("av:", "PyNvVideoCodec:", "retinaface:", "dlib:", "tritonclient:"):
        assert mod in o
    # a package missing here is either installed from .whl/ or reported MISSING with what to do
    assert ("PyNvVideoCodec: install .whl/" in o) or ("PyNvVideoCodec: MISSING" in o and "fetch_wheels.sh" in o)
    assert "dfserve.cli doctor --json" in o
    assert "-m pytest -m gpu" in o
    for stage in ("prepare", "decode", "models", "hotpath", "e2e", "agreement", "seed", "cudashm", "triton", "summary"):
        assert f"bench_gpu.py --work" in o and f" {stage}\n" in o
    for f in ("doctor.json", "pytest-gpu.log", "stage-decode.json", "stage-hotpath.json", "stage-e2e.json",
              "stage-triton.json", "pytest-triton-gpu.log", "gpu-results.json/.md", "results.tar.gz"):
        assert f in o
    assert not out_dir.exists()  # nothing was run


def test_one_step_and_bad_arguments(tmp_path):
    r = dry("--step", "2", results=tmp_path / "r")
    assert r.returncode == 0, r.stderr
    assert "== step2" in r.stdout and "== step1" not in r.stdout
    assert " seed\n" in r.stdout and " summary\n" in r.stdout and "-m pytest -m gpu" in r.stdout
    r = dry("step1", results=tmp_path / "r")  # the figures first
    assert " models\n" in r.stdout and " hotpath\n" in r.stdout and " agreement\n" in r.stdout
    assert " summary\n" in r.stdout  # step1 alone leaves gpu-results.json with the checks
    r = dry("triton", results=tmp_path / "r")
    assert "triton-pack.tar.xz" in r.stdout and " triton\n" in r.stdout  # unpacked, or MISSING with what to do
    bad = subprocess.run(["bash", str(RUN), "step3"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert bad.returncode == 2 and "unknown argument 'step3'" in bad.stderr
    none = subprocess.run(["bash", str(RUN), "--dry-run"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert none.returncode == 2 and "say which step" in none.stderr


@pytest.mark.parametrize("script", ["run.sh", "fetch_wheels.sh"])
def test_scripts_parse(script):
    r = subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu" / script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_fetch_wheels_dry_run_names_the_pinned_wheels():
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu" / "fetch_wheels.sh"), "--dry-run"], capture_output=True,
                       text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    assert r.returncode == 0, r.stderr
    assert "pynvvideocodec==2.2.4" in r.stdout and "--python-version 3.12" in r.stdout
    assert "-d .whl/step1" in r.stdout and "-d .whl/step2" in r.stdout and "tritonclient==" in r.stdout


def test_each_step_keeps_to_its_budget(tmp_path):
    """A step's stages get min(their cap, what is left of --budget before the summary); with too little left a
    stage is skipped with a line, and the summary (which writes gpu-results.json) still runs."""
    r = dry("step1", results=tmp_path / "r")
    assert "budget: 480 s for this step" in r.stdout  # the one command of at most 8 minutes
    r = dry("step1", "--budget", "100", results=tmp_path / "r")
    assert r.returncode == 0, r.stderr
    # 100 s less the 45 s kept for the summary (less the seconds the dry run itself took on a loaded machine)
    caps = [int(m) for m in re.findall(r"timeout (\d+) \S+ benchmarks/gpu/bench_gpu.py .* prepare\n", r.stdout)]
    assert caps and 45 <= caps[0] <= 55, r.stdout
    assert "timeout 200 " not in r.stdout
    r = dry("hot", "--budget", "50", results=tmp_path / "r")
    assert "skipped, the step's 50-s budget is spent" in r.stderr and "hotpath" in r.stderr
    assert " summary\n" in r.stdout
