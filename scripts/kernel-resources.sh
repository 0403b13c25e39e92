#!/usr/bin/env bash
# The resources of every CUDA kernel, without a GPU: compiles each kernels/cuda/*.cu for sm_80 and sm_90 with
# ptxas -v (the flags and defines of kernels/CMakeLists.txt, into a temporary folder), prints one Markdown table
#   | kernel | arch | registers | smem bytes | stack bytes | spill st | spill ld |
# sorted by file then kernel, and a one-line summary.
#   scripts/kernel-resources.sh [TABLE.md]   also writes the table to TABLE.md
# scripts/test.sh runs it after the build, writing build/kernel-resources.md.
# Fails (exit 1, naming kernel, arch and bytes) when a kernel whose demangled name contains flash_ or lora_ has
# spill stores or spill loads, or a flash_ kernel has a stack frame: those kernels keep their tiles in registers
# and shared memory, and a spill is a silent slowdown. Other kernels are only reported. A compile error fails
# the script with nvcc's message; without nvcc it prints that nothing was checked and exits 0.
# Names: demangled (c++filt), without the return type, the namespaces xv::cuda:: and (anonymous namespace)::,
# and the parameter list (kept where two kernels of a file would otherwise read the same); __nv_bfloat16 and
# __half read bf16 and f16. "smem bytes" is static shared memory (dynamic shared memory is set at launch).
# Environment (for tests of this script and experiments):
#   XV_KERNEL_SOURCES="a.cu b.cu"  the files to compile instead of kernels/cuda/*.cu (paths absolute or
#                                  relative to the repository root)
#   XV_KERNEL_NVCC_FLAGS="..."     extra nvcc flags, e.g. -maxrregcount=32
#   XV_NVCC=/path/to/nvcc          the compiler (default: nvcc on PATH, else /usr/local/cuda/bin/nvcc)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
table_out=${1:-}

nvcc=${XV_NVCC:-}
if [ -z "$nvcc" ]; then
  nvcc=$(command -v nvcc || true)
  [ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
fi
if [ -z "$nvcc" ] || ! command -v "$nvcc" >/dev/null 2>&1; then
  echo "nvcc not found: kernel resources not checked"
  exit 0
fi

if [ -n "${XV_KERNEL_SOURCES:-}" ]; then
  read -r -a sources <<<"$XV_KERNEL_SOURCES"
else
  shopt -s nullglob
  sources=("$root"/kernels/cuda/*.cu)
  shopt -u nullglob
fi
if [ "${#sources[@]}" -eq 0 ]; then
  echo "kernel-resources: no .cu files found" >&2
  exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/xv-kernel-resources.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# The device flags of kernels/CMakeLists.txt (CUDA_ARCHITECTURES 80;90, Release). -fatbin stops after the device
# compilation: ptxas sees exactly the code of the normal build, the host compilation is skipped.
read -r -a extra <<<"${XV_KERNEL_NVCC_FLAGS:-}"
flags=(-std=c++20 -O3 -DNDEBUG -DXV_HAVE_CUDA=1 -I"$root"
       -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -Xptxas -v)
: >"$tmp/list"
i=0
for src in "${sources[@]}"; do
  case $src in /*) ;; *) src=$root/$src ;; esac
  if [ ! -f "$src" ]; then
    echo "kernel-resources: $src: no such file" >&2
    exit 1
  fi
  i=$((i + 1))
  log=$tmp/$i.log
  # One nvcc at a time: the files compile one after another.
  if ! "$nvcc" "${flags[@]}" ${extra[@]+"${extra[@]}"} -fatbin "$src" -o "$tmp/$i.fatbin" >"$log" 2>&1; then
    echo "kernel-resources: nvcc failed on ${src#"$root"/}:" >&2
    grep -v '^ptxas info' "$log" >&2 || true
    exit 1
  fi
  printf '%s\t%s\n' "${src#"$root"/}" "$log" >>"$tmp/list"
done

filt=$(command -v c++filt || true)
XV_CXXFILT=$filt python3 - "$tmp/list" "$table_out" <<'PY'
import os
import re
import subprocess
import sys

list_file, table_out = sys.argv[1], sys.argv[2]
ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
PROPS = re.compile(r"Function properties for (\S+)")
FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers")
SMEM = re.compile(r"(\d+) bytes smem")

# rows: dicts with file, mangled, arch, entry, regs, smem, stack, st, ld
rows = []
compiled = [line for line in open(list_file) if line.strip()]
for line in compiled:
    fname, log = line.rstrip("\n").split("\t")
    run_arch = None    # the architecture of the ptxas run we are in (one run per arch, each opens with gmem)
    pending = []       # device functions of this run seen before its first entry
    cur = None         # the function whose properties come next
    for text in open(log):
        if "bytes gmem" in text:
            run_arch, pending, cur = None, [], None
            continue
        m = ENTRY.search(text)
        if m:
            run_arch = m.group(2)
            for r in pending:
                r["arch"] = run_arch
            pending = []
            cur = {"file": fname, "mangled": m.group(1), "arch": run_arch, "entry": True,
                   "regs": None, "smem": 0, "stack": 0, "st": 0, "ld": 0}
            rows.append(cur)
            continue
        m = PROPS.search(text)
        if m:
            name = m.group(1)
            if cur is not None and cur["entry"] and cur["mangled"] == name:
                continue
            # a non-inlined device function (not an entry): its own frame and spills
            cur = {"file": fname, "mangled": name, "arch": run_arch, "entry": False,
                   "regs": None, "smem": None, "stack": 0, "st": 0, "ld": 0}
            rows.append(cur)
            if run_arch is None:
                pending.append(cur)
            continue
        m = FRAME.search(text)
        if m and cur is not None:
            cur["stack"], cur["st"], cur["ld"] = (int(g) for g in m.groups())
            continue
        m = USED.search(text)
        if m and cur is not None and cur["entry"]:
            cur["regs"] = int(m.group(1))
            s = SMEM.search(text)
            cur["smem"] = int(s.group(1)) if s else 0

# Demangle all names with one c++filt.
names = sorted({r["mangled"] for r in rows})
demangled = dict(zip(names, names))
filt = os.environ.get("XV_CXXFILT")
if filt and names:
    out = subprocess.run([filt], input="\n".join(names) + "\n", capture_output=True, text=True,
                         check=True).stdout
    demangled = dict(zip(names, out.splitlines()))


def split_params(name):
    """(name with template arguments, parameter list) of a demangled function name."""
    depth = 0
    for i, c in enumerate(name):
        if c == "<":
            depth += 1
        elif c == ">":
            depth -= 1
        elif c == "(" and depth == 0 and not name.startswith("(anonymous namespace)", i):
            return name[:i], name[i:]
    return name, ""


def tidy(s):
    s = re.sub(r"_INTERNAL_\w+::", "", s)
    s = s.replace("(anonymous namespace)::", "")
    s = re.sub(r"\bxv::cuda::", "", s)
    s = re.sub(r"\bxv::", "", s)
    s = re.sub(r"\bCUB_\w+::", "", s)        # CUB's versioned inline namespace
    s = re.sub(r"\bcub::detail::", "cub::", s)
    s = re.sub(r"\b__nv_bfloat16\b", "bf16", s)
    s = re.sub(r"\b__half\b", "f16", s)
    return s


for r in rows:
    full = demangled.get(r["mangled"], r["mangled"])
    if full.startswith("void "):
        full = full[len("void "):]
    base, params = split_params(full)
    r["demangled"] = full
    r["base"], r["params"] = tidy(base), tidy(params)
# Keep the parameter list where two functions of one file and arch would read the same without it.
seen = {}
for r in rows:
    seen.setdefault((r["file"], r["arch"], r["base"]), []).append(r)
for r in rows:
    same = seen[(r["file"], r["arch"], r["base"])]
    r["short"] = r["base"] + (r["params"] if len(same) > 1 else "")

rows.sort(key=lambda r: (r["file"], not r["entry"], r["short"], r["arch"] or ""))


def cell(v):
    return "-" if v is None else str(v)


lines = ["| kernel | arch | registers | smem bytes | stack bytes | spill st | spill ld |",
         "|---|---|---:|---:|---:|---:|---:|"]
for r in rows:
    name = f"{os.path.basename(r['file'])}: `{r['short']}`" + ("" if r["entry"] else " (device function)")
    name = name.replace("|", "\\|")
    lines.append(f"| {name} | {r['arch'] or '?'} | {cell(r['regs'])} | {cell(r['smem'])} | {r['stack']} | "
                 f"{r['st']} | {r['ld']} |")
table = "\n".join(lines) + "\n"
sys.stdout.write(table)
if table_out:
    os.makedirs(os.path.dirname(os.path.abspath(table_out)), exist_ok=True)
    with open(table_out, "w") as f:
        f.write(table)

# The check: flash_ and lora_ functions (kernels, and non-inlined device functions so named) do not spill, and
# flash_ ones have no stack frame.
failures = []
checked = set()
for r in rows:
    plain = r["demangled"]
    flash, lora = "flash_" in plain, "lora_" in plain
    if not (flash or lora):
        continue
    if r["entry"]:
        checked.add((r["file"], r["mangled"]))
    what = f"{r['short']} ({r['file']}, {r['arch']})"
    if r["st"] > 0 or r["ld"] > 0:
        failures.append(f"{what}: {r['st']} bytes spill stores, {r['ld']} bytes spill loads")
    if flash and r["stack"] > 0:
        failures.append(f"{what}: {r['stack']} bytes stack frame")
kernels = {(r["file"], r["mangled"]) for r in rows if r["entry"]}
files = len(compiled)
sys.stdout.flush()
for f in failures:
    print(f"kernel-resources: FAIL: {f}", file=sys.stderr)
result = f"FAILED ({len(failures)} problem(s))" if failures else "ok"
print(f"kernel-resources: {len(kernels)} kernels in {files} files (sm_80, sm_90), {len(checked)} checked for "
      f"spills (flash_, lora_): {result}")
sys.exit(1 if failures else 0)
PY
