#!/usr/bin/env bash
# MiniLM embedding throughput, side by side: xvlm2vec (bench_embed) and sentence-transformers on PyTorch,
# the same real sentences (tests/fixtures/tokenizer/sentences.jsonl: gettext catalogs, 5 languages), the
# same model files, thread count and batch size. Prints both JSON lines and the ratio.
#   benchmarks/minilm_vs_peer.sh [THREADS] [BATCH]
# Needs a build (scripts/build.sh) and a Python with sentence-transformers ($PYTHON, default: the
# virtual environment tools/make_fixtures.sh makes, build/tools-venv).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${XV_BUILD_DIR:-$root/build}
threads=${1:-$(nproc)}
batch=${2:-32}
py=${PYTHON:-$build/tools-venv/bin/python}
model=$build/models/all-MiniLM-L6-v2
bash "$root/scripts/prepare-minilm.sh" "$model" "$build/venv" >/dev/null
sents=$build/bench-sentences.json
"$py" - "$root/tests/fixtures/tokenizer/sentences.jsonl" "$sents" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
lines = [s for s in lines if s.strip()]
json.dump(lines[:2000], open(sys.argv[2], "w", encoding="utf-8"), ensure_ascii=False)
PY
ours=$("$build/benchmarks/bench_embed" "$model" "$sents" --threads "$threads" --batch-size "$batch" --repeat 3)
peer=$(HF_HUB_OFFLINE=1 "$py" "$root/benchmarks/peers/minilm_embed_st.py" "$model" "$sents" --threads "$threads" --batch-size "$batch" --repeat 3)
echo "$ours"
echo "$peer"
"$py" - "$ours" "$peer" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"ratio xvlm2vec / sentence-transformers: {a['sentences_per_s'] / b['sentences_per_s']:.2f}x throughput, "
      f"{b['peak_rss_mb'] / a['peak_rss_mb']:.1f}x less peak memory "
      f"({a['sentences']} sentences, {a['threads']} threads, batch {a['batch_size']})")
PY
