#!/usr/bin/env bash
# The README's test command: installs dependencies, builds with warnings as errors, checks the CUDA kernels'
# resources (scripts/kernel-resources.sh), runs every test.
#   scripts/test.sh [--sanitize | --fuzz] [ctest arguments...]
# --sanitize: a separate AddressSanitizer + UBSan build (build-asan/, or $XV_ASAN_BUILD_DIR) running the
# unit tests, which include every bad-input test.
# --fuzz: the libFuzzer targets of every parser, 60 s each, in their own clang build (scripts/fuzz.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ "${1:-}" = "--fuzz" ]; then
  exec bash "$root/scripts/fuzz.sh" 60
fi
bash "$root/scripts/install-deps.sh"
if [ "${1:-}" = "--sanitize" ]; then
  shift
  build=${XV_ASAN_BUILD_DIR:-$root/build-asan}
  XV_BUILD_DIR=$build bash "$root/scripts/build.sh" -DXV_WERROR=ON -DXV_SANITIZE=ON -DXV_CUDA=OFF \
    -DXV_BENCHMARKS=OFF
  cd "$build"
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
  ctest --output-on-failure -j "${XV_JOBS:-$(nproc)}" -L unit "$@"
  exit 0
fi
build=${XV_BUILD_DIR:-$root/build}
XV_BUILD_DIR=$build bash "$root/scripts/build.sh" -DXV_WERROR=ON
# Registers, shared memory and spills of every CUDA kernel (no GPU needed); fails on a flash_/lora_ spill. The
# table goes to build/kernel-resources.md; its summary line (and any failure, on stderr) to the log.
bash "$root/scripts/kernel-resources.sh" "$build/kernel-resources.md" | tail -n 1
cd "$build"
ctest --output-on-failure -j "${XV_JOBS:-$(nproc)}" "$@"
