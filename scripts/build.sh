#!/usr/bin/env bash
# Configures and builds into build/ (or $XV_BUILD_DIR). Extra arguments go to cmake's configure step.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${XV_BUILD_DIR:-$root/build}
jobs=${XV_JOBS:-$(nproc)}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=${XV_BUILD_TYPE:-Release} "$@" >/dev/null
cmake --build "$build" -j "$jobs"
