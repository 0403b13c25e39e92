#!/usr/bin/env bash
# The one prepared run on a GPU machine (docs/design.md section 10): every op of the set, forward and
# backward, on the CUDA backend against the CPU reference (tests/test_backend_ops.cpp), the CUDA backend's host
# side (tests/test_cuda_host.cpp), the GPU kernels against their peers and ceilings (bench_gpu_kernels, and
# PyTorch's cuDNN / flash SDPA on the same shapes by peer_sdpa.py) and the CPU kernel benchmarks of that machine
# for scale; then one table.
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
timeout 150 /tmp/xv-gpu/bin/bench_gpu_kernels --json "$out/bench_gpu.json" > "$out/bench_gpu.log" 2>&1
timeout 120 python3 "$root/benchmarks/gpu/peer_sdpa.py" > "$out/peer_sdpa.json" 2> "$out/peer_sdpa.log"
timeout 60 /tmp/xv-gpu/bin/bench_kernels --benchmark_min_time=0.1 > "$out/bench_kernels.log" 2>&1
{
  echo "== results"
  echo "| run                | exit | passed | failed | skipped | time   |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo "== failures"
  grep -h -A12 'Failure' "$out"/cuda_host.log "$out"/backend_ops.log | head -120
  echo "== GPU kernels (bench_gpu_kernels)"
  grep -E '^\|' "$out/bench_gpu.log" || tail -5 "$out/bench_gpu.log"
  echo "== attention against PyTorch SDPA (TFLOP/s; ratio = ours / peer)"
  python3 - "$out/bench_gpu.json" "$out/peer_sdpa.json" <<'PY' || echo "(no comparison: a run above failed)"
import json, sys
ours = {r["name"].replace(" (deterministic)", ""): r["value"] for r in json.load(open(sys.argv[1]))["rows"]
        if r["group"] == "attention" and "(fast)" not in r["name"]}
peer = json.load(open(sys.argv[2]))["rows"]
print("| shape | ours | cudnn | ratio | torch-flash | ratio |")
print("|---|---|---|---|---|---|")
for name in ours:
    got = {p["backend"]: p.get("value") for p in peer if p["name"] == name}
    cells = []
    for be in ("cudnn", "torch-flash"):
        v = got.get(be)
        cells += [f"{v:.1f}", f"{ours[name] / v:.2f}"] if v else ["n/a", "n/a"]
    print(f"| {name} | {ours[name]:.1f} | " + " | ".join(cells) + " |")
PY
  echo "== CPU kernels on this machine (bench_kernels)"
  grep -E '^BM_' "$out/bench_kernels.log" | head -20
} | tee -a "$out/check.txt"
