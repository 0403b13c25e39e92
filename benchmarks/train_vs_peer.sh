#!/usr/bin/env bash
# Self-KD training-step throughput, side by side: xvlm2vec (bench_train) and PyTorch + PEFT, on the real
# all-MiniLM-L6-v2 (real catalog sentences) and on the tiny Phi-3-vision (pairs with images); the same
# pairs, batch, LoRA, threads and steps.
#   benchmarks/train_vs_peer.sh [THREADS] [BATCH] [STEPS]
# Needs a build (scripts/build.sh) and a Python with torch, transformers and peft ($PYTHON, default:
# build/tools-venv from tools/make_fixtures.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${XV_BUILD_DIR:-$root/build}
threads=${1:-$(nproc)}
batch=${2:-8}
steps=${3:-20}
py=${PYTHON:-$build/tools-venv/bin/python}
model=$build/models/all-MiniLM-L6-v2
bash "$root/scripts/prepare-minilm.sh" "$model" "$build/venv" >/dev/null
pairs=$build/bench-pairs.json
"$py" - "$root/tests/fixtures/tokenizer/sentences.jsonl" "$pairs" <<'PY'
import json, sys
s = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
s = [x for x in s if x.strip()]
json.dump([[s[i], s[i + 1000]] for i in range(512)], open(sys.argv[2], "w", encoding="utf-8"), ensure_ascii=False)
PY
ours=$("$build/benchmarks/bench_train" "$model" "$pairs" --threads "$threads" --batch-size "$batch" --steps "$steps")
peer=$(HF_HUB_OFFLINE=1 "$py" "$root/benchmarks/peers/train_step_peft.py" "$model" "$pairs" --threads "$threads" --batch-size "$batch" --steps "$steps" 2>/dev/null)
ratio() {
  "$py" - "$1" "$2" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{a['arch']}: ratio xvlm2vec / {b['impl']}: {a['pairs_per_s'] / b['pairs_per_s']:.2f}x pairs/s, "
      f"{b['peak_rss_mb'] / a['peak_rss_mb']:.1f}x less peak memory ({a['batch_size']} pairs, {a['threads']} threads)")
PY
}
echo "$ours"
echo "$peer"
ratio "$ours" "$peer"

# The tiny Phi-3-vision, pairs with images (4 pairs a step: 2x2, 1x4 and 2x2 crop grids).
vpairs=$build/bench-pairs-phi3v.json
"$py" - "$vpairs" "$root/tests/fixtures" <<'PY'
import json, sys
imgs = ["images/landscape_300x200.png", "images/wide_800x96.png", "images/square_256.png", "images/tiny_50x30.png"]
pairs = [["<|image_1|> Represent the given image.", "<|image_1|> Rappresenta l'immagine data.", imgs[i % 4]] for i in range(8)]
json.dump(pairs, open(sys.argv[1], "w"))
json.dump([[p[0], p[1], sys.argv[2] + "/" + p[2]] for p in pairs], open(sys.argv[1] + ".abs", "w"))
PY
ours=$("$build/benchmarks/bench_train" "$root/tests/fixtures/models/tiny_phi3v" "$vpairs.abs" --threads "$threads" --batch-size 4 --steps 5)
peer=$(HF_HUB_OFFLINE=1 "$py" "$root/benchmarks/peers/train_step_phi3v_peft.py" "$vpairs" --threads "$threads" --batch-size 4 --steps 5 2>/dev/null)
echo "$ours"
echo "$peer"
ratio "$ours" "$peer"
