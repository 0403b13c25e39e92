#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz/ (clang, AddressSanitizer + UBSan) and runs each in turn
# (docs/fuzzing.md).
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]    default: 60 s, every target (names without fuzz_)
# Prints one line per target (executions, coverage, features, seconds, findings) and exits non-zero when any
# target found a crash, a timeout, an out-of-memory or a leak; each finding and its log stay under
# <build>/fuzz-findings/<target>/. Known crashes and hangs inside libhdf5 (the corpus reader's target; not
# ours, docs/fuzzing.md) are set apart in fuzz-findings/corpus_reader/hdf5/ and the run goes on, unless
# XV_REPLAY_STRICT is set. The inputs each fuzzer adds stay in <build>/fuzz-corpus/<target>/ for the next run.
# Environment: XV_FUZZ_BUILD_DIR (default build-fuzz/), XV_JOBS (build jobs, default: all cores).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-60}
[ $# -gt 0 ] && shift
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -eq 0 ]; then
  echo "fuzz: SECONDS_PER_TARGET must be a positive integer" >&2
  exit 2
fi
build=${XV_FUZZ_BUILD_DIR:-$root/build-fuzz}

# Target, -max_len (bytes; the largest useful input: seeds above it are not copied, see make_seeds.sh).
declare -A max_len=([safetensors]=65536 [model_config]=8192 [npy]=16384 [tokenizer_json]=131072
                    [tokenizer_encode]=4096 [image]=65536 [mo_catalog]=16384 [train_config]=8192
                    [benchmark]=16384 [corpus_reader]=131072)
all=(safetensors model_config npy tokenizer_json tokenizer_encode image mo_catalog train_config benchmark
     corpus_reader)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
  [ -n "${max_len[$t]:-}" ] || { echo "fuzz: unknown target '$t' (one of: ${all[*]})" >&2; exit 2; }
done

# The project's packages, then clang with libFuzzer's runtime and llvm-symbolizer (readable stacks).
bash "$root/scripts/install-deps.sh"
missing=()
for p in clang libclang-rt-dev llvm; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  echo "fuzz: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DXV_SANITIZE=ON \
  -DXV_FUZZ=ON -DXV_CUDA=OFF -DXV_BENCHMARKS=OFF >/dev/null
build_targets=()
for t in "${targets[@]}"; do build_targets+=("fuzz_$t"); done
[[ " ${targets[*]} " == *" corpus_reader "* ]] && build_targets+=(test_corpus_fuzz_replay)
cmake --build "$build" -j "${XV_JOBS:-$(nproc)}" --target "${build_targets[@]}"

# Seeds: the fixtures' files (make_seeds.sh), and the corpora test_corpus_fuzz_replay writes.
seeds=$build/fuzz-seeds
bash "$root/tests/fuzz/make_seeds.sh" "$root" "$seeds" >/dev/null
if [[ " ${targets[*]} " == *" corpus_reader "* ]]; then
  "$build/tests/test_corpus_fuzz_replay" --gtest_filter=CorpusFuzzReplay.SeedsAreValid >/dev/null
fi

# The input files of the path-taking parsers go to memory when it can take them.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
findings=$build/fuzz-findings
failed=()

# Whether the report in log $1 is inside libhdf5: its innermost stack frame outside libc, the sanitizer
# runtimes, libFuzzer and the allocation and copy functions they intercept is in libhdf5 (as
# test_corpus_fuzz_replay decides).
inside_hdf5() {
  awk '/ERROR: |runtime error:/ { report = 1 }
       report && /^ *#[0-9]+ / {
         if ($0 ~ /libc\.so|ld-linux|libasan|libubsan|libclang_rt|linux-vdso|__restore_rt/) next
         if ($0 ~ / in (__sanitizer|__asan|__lsan|__ubsan|__interceptor_|fuzzer::|__libc_)/) next
         if ($0 ~ / in (malloc|calloc|realloc|free|memcpy|memmove|memset|strlen|operator new|operator delete)[ (]/) next
         if ($0 ~ / in _*(mem|str)[a-z0-9_]* / || $0 ~ /sysdeps\//) next  # glibc and its interceptors (strdup, ...)
         found = ($0 ~ /libhdf5/); exit }
       END { exit found ? 0 : 1 }' "$1"
}

for t in "${targets[@]}"; do
  bin=$build/tests/fuzz/fuzz_$t
  corpus=$build/fuzz-corpus/$t
  out=$findings/$t
  mkdir -p "$corpus" "$out"
  opts=(-max_len="${max_len[$t]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -dict="$root/tests/fuzz/dict/$t.dict" -artifact_prefix="$out/")
  asan=${ASAN_OPTIONS:-}
  if [ "$t" = corpus_reader ]; then
    # HDF5 allocates sizes read from the file and checks the result; it also leaks on some error paths. An
    # allocation above 512 MB fails (HDF5 reports it) instead of pushing the process past the RSS limit, and a
    # smaller quarantine keeps ASan's own share down: without them a 60 s run could end in an out-of-memory
    # report that is HDF5 obeying a damaged file.
    asan=${asan:+$asan:}allocator_may_return_null=1:max_allocation_size_mb=512:quarantine_size_mb=64
    opts=(-max_len="${max_len[$t]}" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1
          -dict="$root/tests/fuzz/dict/$t.dict" -artifact_prefix="$out/" -detect_leaks=0)
  fi
  execs=0 cov=? ft=? found=0 hdf5=0 segment=0
  start=$SECONDS
  # One fuzzer run for the whole time, or several when one stops on a known HDF5 finding.
  while left=$((secs - (SECONDS - start))); [ "$left" -gt 0 ] && [ "$segment" -lt 1000 ]; do
    segment=$((segment + 1))
    log=$out/log-$segment.txt
    before=$(ls "$out" | grep -cE '^(crash|timeout|oom|leak)-' || true)
    rc=0
    ASAN_OPTIONS=$asan "$bin" "${opts[@]}" -max_total_time="$left" "$corpus" "$seeds/$t" >"$log" 2>&1 &
    pid=$!
    wait "$pid" || rc=$?
    # The target's folder of temporary files (tests/fuzz/fuzz_util.h), which a crash leaves behind.
    rm -rf "${TMPDIR:-/tmp}/xv_fuzz_${t}_$pid"
    n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    [ -n "$n" ] || n=$(grep -oE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#')
    execs=$((execs + ${n:-0}))
    last=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1 || true)
    if [ -n "$last" ]; then cov=$(echo "$last" | cut -d' ' -f2); ft=$(echo "$last" | cut -d' ' -f4); fi
    after=$(ls "$out" | grep -cE '^(crash|timeout|oom|leak)-' || true)
    [ "$rc" -eq 0 ] && { rm -f "$log"; break; }
    if [ "$t" = corpus_reader ] && [ -z "${XV_REPLAY_STRICT:-}" ] && [ "$after" -gt "$before" ] && inside_hdf5 "$log"; then
      mkdir -p "$out/hdf5"
      for f in $(ls -t "$out" | grep -E '^(crash|timeout|oom|leak)-' | head -n $((after - before))); do
        mv "$out/$f" "$out/hdf5/"
        mv "$log" "$out/hdf5/$f.log"
      done
      hdf5=$((hdf5 + 1))
      continue
    fi
    found=$((found + (after > before ? after - before : 1)))
    break
  done
  note=""
  [ "$hdf5" -gt 0 ] && note="  (NOTE: $hdf5 inside libhdf5, in $out/hdf5/)"
  printf '%-17s execs %10s  cov %6s  ft %6s  %5ss  findings %s%s\n' "$t" "$execs" "$cov" "$ft" \
    "$((SECONDS - start))" "$found" "$note"
  if [ "$found" -gt 0 ]; then
    failed+=("$t")
    echo "  -> $out/ (log: $log)"
  fi
done
if ((${#failed[@]} > 0)); then
  echo "fuzz: findings in ${failed[*]}; replay one with $build/tests/fuzz/fuzz_<target> FILE" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} target(s), no findings"
