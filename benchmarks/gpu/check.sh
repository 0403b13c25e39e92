#!/usr/bin/env bash
# The one prepared run on a GPU machine (docs/design.md section 10): every op of the set, forward and
# backward, on the CUDA backend against the CPU reference (tests/test_backend_ops.cpp), the CUDA backend's host
# side (tests/test_cuda_host.cpp), and the CPU kernel benchmarks of that machine for scale; then one table.
# Under 8 minutes. Made from .gpu/bundle.tar.xz (benchmarks/gpu/pack.sh, run first where the project builds).
#   bash benchmarks/gpu/check.sh            # writes $OUT/check.txt and the gtest JSON files when OUT is set
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=${OUT:-$root/.gpu/out}
mkdir -p "$out" /tmp/xv-gpu
tar -C /tmp/xv-gpu -xJf .gpu/bundle.tar.xz || { echo "no .gpu/bundle.tar.xz: run benchmarks/gpu/pack.sh first"; exit 1; }
export LD_LIBRARY_PATH=/tmp/xv-gpu/lib:${LD_LIBRARY_PATH:-}
# cuBLASLt of this machine's CUDA (the binaries load it on first use; XV_CUBLASLT names it when not on the path).
if [ -z "${XV_CUBLASLT:-}" ]; then
  XV_CUBLASLT=$(ls /usr/local/cuda/lib64/libcublasLt.so.13* /usr/local/cuda/lib/libcublasLt.so.13* 2>/dev/null | head -1)
  [ -z "$XV_CUBLASLT" ] && XV_CUBLASLT=$(find / -xdev -name 'libcublasLt.so.13*' 2>/dev/null | head -1)
  export XV_CUBLASLT
fi
{
  echo "== machine"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  echo "cuBLASLt: ${XV_CUBLASLT:-not found}"
} | tee "$out/check.txt"
rows=()
run() {  # run NAME TIMEOUT COMMAND...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$? dt=$((SECONDS - t0))
  local passed failed skipped
  passed=$(grep -c '^\[       OK \]' "$out/$name.log")
  failed=$(grep -c '^\[  FAILED  \] [A-Z]' "$out/$name.log")
  skipped=$(grep -c '^\[  SKIPPED \] [A-Z]' "$out/$name.log")
  rows+=("$(printf '| %-18s | %4s | %6s | %6s | %7s | %5ss |' "$name" "$rc" "$passed" "$failed" "$skipped" "$dt")")
}
run cuda_host 60 /tmp/xv-gpu/bin/test_cuda_host --gtest_output=json:"$out/cuda_host.json"
run backend_ops 300 /tmp/xv-gpu/bin/test_backend_ops --gtest_output=json:"$out/backend_ops.json"
timeout 120 /tmp/xv-gpu/bin/bench_kernels --benchmark_min_time=0.2 > "$out/bench_kernels.log" 2>&1
{
  echo "== results"
  echo "| run                | exit | passed | failed | skipped | time   |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo "== failures"
  grep -h -A12 'Failure' "$out"/cuda_host.log "$out"/backend_ops.log | head -120
  echo "== CPU kernels on this machine (bench_kernels)"
  grep -E '^BM_' "$out/bench_kernels.log" | head -20
} | tee -a "$out/check.txt"
