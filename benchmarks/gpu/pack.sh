#!/usr/bin/env bash
# Packs what benchmarks/gpu/check.sh runs on a GPU machine, which has CUDA but none of our Debian libraries and
# no package registry: the CUDA tests and benchmarks built here (x86-64, sm_80 and sm_90) with the shared
# libraries they need beyond the system's, in .gpu/bundle.tar.xz (ignored by git). Then, one device call:
#   run(command="bash benchmarks/gpu/check.sh", carry=[".gpu"])
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${XV_BUILD_DIR:-$root/build}
cd "$root"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
XV_BUILD_DIR=$build bash scripts/build.sh >/dev/null
cmake --build "$build" -j "$(nproc)" --target test_backend_ops test_cuda_host bench_kernels bench_gpu_kernels >/dev/null
rm -rf .gpu && mkdir -p .gpu/stage/bin .gpu/stage/lib
bins=(tests/test_backend_ops tests/test_cuda_host benchmarks/bench_kernels benchmarks/bench_gpu_kernels)
for b in "${bins[@]}"; do cp "$build/$b" .gpu/stage/bin/ && strip .gpu/stage/bin/"$(basename "$b")"; done
# The libraries outside glibc and libstdc++ that the binaries load (the GPU machine brings its own driver).
for b in .gpu/stage/bin/*; do ldd "$b"; done | awk '$3 ~ /^\// {print $3}' | sort -u |
  grep -Ev '/(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|ld-linux)[.-]' |
  while read -r lib; do cp -L "$lib" .gpu/stage/lib/; done
tar -C .gpu/stage -cJf .gpu/bundle.tar.xz bin lib
rm -rf .gpu/stage
du -h .gpu/bundle.tar.xz
