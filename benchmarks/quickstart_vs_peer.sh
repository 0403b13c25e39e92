#!/usr/bin/env bash
# The quickstart job side by side: `xvlm2vec train configs/quickstart.yaml` + `xvlm2vec eval run`, and the same
# job written with sentence-transformers + PEFT on PyTorch (benchmarks/peers/quickstart_peft.py), on the same
# corpus, teacher block, benchmark, hyper-parameters, number of steps and threads. Prints a table: training
# pairs/s and their ratio, peak RSS, the average xx->en P@1 before and after, and the English cosine.
#
#   benchmarks/quickstart_vs_peer.sh [STEPS] [THREADS] [--set key=value ...]
#
# STEPS: optimizer steps (default: the config's train.max_steps); THREADS: CPU threads for both (default: all
# cores). Both can also come from the environment variables of the same names; an empty argument means the
# default. Further `--set key=value` overrides go to both trainers alike (for example
# `--set data.teacher_cache=` to have both compute the teacher with adapters off).
#
# Needs an already-prepared quickstart folder (XV_QUICKSTART_DIR, default runs/quickstart, made by
# `bash scripts/run.sh`): corpus/train.h5 with its /teacher block, and benchmark/. Both runs go into its
# side-by-side/ subfolder, which is replaced on each run; nothing else there is touched. XV_BENCHMARK names
# another benchmark folder (docs/benchmark-format.md) to evaluate on instead of the quickstart's, for
# example a smaller one for a quick check: the full one has tens of thousands of distinct texts, each embedded
# twice (teacher and student) on each side.
# Needs a build (XV_BUILD_DIR, default build/) and a Python ($PYTHON, default build/tools-venv/bin/python) with
# torch, sentence-transformers, peft, h5py and pyyaml, which this makes:
#   python3 -m venv V && V/bin/pip install -r tools/requirements.txt h5py pyyaml && PYTHON=V/bin/python ...
#
# Throughput, both sides: the pairs of steps 2..STEPS over the wall time from the end of step 1 to the end of
# the last step (step 1 is the warm-up). Ours comes from output_dir/metrics.jsonl, logged at every step
# (elapsed_s of the last step minus that of step 1), so checkpoint writing and export are outside it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${XV_BUILD_DIR:-$root/build}
qs=${XV_QUICKSTART_DIR:-$root/runs/quickstart}
py=${PYTHON:-$build/tools-venv/bin/python}
xv=$build/launch/xvlm2vec
model=$build/models/all-MiniLM-L6-v2
config=$root/configs/quickstart.yaml
bench=${XV_BENCHMARK:-$qs/benchmark}
steps=${1:-${STEPS:-}}
threads=${2:-${THREADS:-$(nproc)}}
shift $(( $# < 2 ? $# : 2 ))
extra=("$@")

die() { echo "quickstart_vs_peer.sh: $*" >&2; exit 2; }
[[ -x $xv ]] || die "$xv not found: build first (bash scripts/build.sh, or set XV_BUILD_DIR)"
[[ -d $model ]] || die "$model not found: bash scripts/prepare-minilm.sh $model $build/venv (or run scripts/run.sh)"
[[ -f $qs/corpus/train.h5 ]] || die "$qs/corpus/train.h5 not found: prepare the quickstart first (bash scripts/run.sh, or set XV_QUICKSTART_DIR)"
[[ -f $bench/benchmark.json ]] || die "$bench/benchmark.json not found: prepare the quickstart first (bash scripts/run.sh), or set XV_BENCHMARK"
[[ -x $py ]] || die "no Python at $py: set PYTHON to one with torch, sentence-transformers, peft, h5py and pyyaml (python3 -m venv V && V/bin/pip install -r tools/requirements.txt h5py pyyaml)"
"$py" -c "import torch, sentence_transformers, peft, h5py, yaml" 2>/dev/null ||
  die "$py lacks one of torch, sentence-transformers, peft, h5py, pyyaml: $py -m pip install -r tools/requirements.txt h5py pyyaml"
[[ $threads =~ ^[1-9][0-9]*$ ]] || die "THREADS must be a positive integer, found '$threads'"
if [[ -z $steps ]]; then
  steps=$("$py" -c 'import sys, yaml; print((yaml.safe_load(open(sys.argv[1])).get("train") or {}).get("max_steps", 0))' "$config")
fi
[[ $steps =~ ^[0-9]+$ ]] || die "STEPS must be a non-negative integer, found '$steps'"

side=$qs/side-by-side
rm -rf "$side"
mkdir -p "$side/ours"
# The same overrides for both; max_steps 0 lets each derive the steps from epochs, as the config says.
sets=(--set "model=$model" --set "data.train=$qs/corpus/train.h5" --set "train.max_steps=$steps"
      --set "train.threads=$threads" "${extra[@]}")

echo "== xvlm2vec: train ($steps steps, $threads threads), then eval run" >&2
# Logged at every step so that step 1 can be left out of the timing; checkpoint only at the end and no
# merged export, which the comparison does not use (both happen after the timed steps anyway).
(cd "$root" && "$xv" train "$config" "${sets[@]}" --set "output_dir=$side/ours/train" --set log.every_steps=1 \
  --set checkpoint.every_steps=0 --set export.merged=false) 2> >(tee "$side/ours/train.log" >&2)
"$xv" --threads "$threads" eval run --model "$model" --adapter "$side/ours/train/adapter" \
  --benchmark "$bench" --out "$side/ours/eval" --quiet > "$side/ours/eval.md"

echo "== sentence-transformers + PEFT: the same job" >&2
(cd "$root" && HF_HUB_OFFLINE=1 "$py" "$root/benchmarks/peers/quickstart_peft.py" "$config" "${sets[@]}" \
  --threads "$threads" --benchmark "$bench") > "$side/peer.json" 2> "$side/peer.log" ||
  { tail -n 20 "$side/peer.log" >&2; die "the peer failed (log: $side/peer.log)"; }

"$py" - "$side" <<'PY' | tee "$side/table.md"
import json, os, sys
import yaml

side = sys.argv[1]
run = os.path.join(side, "ours", "train")
cfg = yaml.safe_load(open(os.path.join(run, "config.yaml")))
per_step = cfg["train"]["batch_size"] * cfg["train"]["grad_accum"]
log = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl")) if l.strip()]
if len(log) >= 2:
    ours_pps = (log[-1]["step"] - log[0]["step"]) * per_step / (log[-1]["elapsed_s"] - log[0]["elapsed_s"])
else:  # one step: nothing after the warm-up
    ours_pps = log[0]["pairs_per_s"]
ours_rss = max(r["peak_rss_mb"] for r in log)
res = json.load(open(os.path.join(side, "ours", "eval", "results.json")))
peer = json.load(open(os.path.join(side, "peer.json")))
pev = peer["eval"]


def p1(avg, col):
    a = avg.get("xx->en")
    return f"{100 * a[col]['p_at_1']:.1f}" if a else "n/a"


def cos(v):
    return f"{v:.4f}" if v is not None else "n/a"


rows = [
    ("training pairs/s (steps 2..N)", f"{ours_pps:.1f}", f"{peer['pairs_per_s']:.1f}",
     f"**{ours_pps / peer['pairs_per_s']:.2f}x**"),
    ("peak RSS during training (MB)", f"{ours_rss:.0f}", f"{peer['peak_rss_mb']:.0f}",
     f"{peer['peak_rss_mb'] / ours_rss:.1f}x less"),
    ("loss at the last step", f"{log[-1]['loss']:.4e}", f"{peer['log'][-1]['loss']:.4e}", ""),
    ("avg xx->en P@1 before (%)", p1(res["averages"], "before"), p1(pev["averages"], "before"), ""),
    ("avg xx->en P@1 after (%)", p1(res["averages"], "after"), p1(pev["averages"], "after"), ""),
    ("English cosine (student vs teacher)", cos(res["english"]["cosine"]), cos(pev["english"]["cosine"]), ""),
    ("eval embedding seconds", f"{res['embed_seconds']:.1f}", f"{pev['embed_seconds']:.1f}",
     f"{pev['embed_seconds'] / res['embed_seconds']:.2f}x" if res["embed_seconds"] > 0 else ""),
]
print(f"\nQuickstart side by side: {log[-1]['step']} steps of {per_step} pairs, threads {peer['threads']}, "
      f"{peer['pairs']} training pairs, teacher: {peer['teacher']}\n")
print(f"| | xvlm2vec | {peer['impl']} (torch {peer['torch']}) | xvlm2vec vs peer |")
print("|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
print(f"\nFiles: {side}/ours (train, eval), {side}/peer.json")
PY
