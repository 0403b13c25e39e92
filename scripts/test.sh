#!/usr/bin/env bash
# The README's test command: installs dependencies, builds with warnings as errors, runs every test.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/install-deps.sh"
XV_BUILD_DIR=${XV_BUILD_DIR:-$root/build} bash "$root/scripts/build.sh" -DXV_WERROR=ON
cd "${XV_BUILD_DIR:-$root/build}"
ctest --output-on-failure -j "${XV_JOBS:-$(nproc)}" "$@"
