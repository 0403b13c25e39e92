#!/usr/bin/env bash
# End-to-end checks of `xvlm2vec train`, `corpus cache-teacher` and `export` on configs/tiny-bert.yaml:
# exit codes, messages, outputs, and the bad-input cases (malformed YAML, unknown key, wrong type, missing
# model or data, empty text, an image given to bert, a diverging run).
#   train_cli_test.sh XVLM2VEC_BINARY SOURCE_DIR
set -u
bin=$1
src=$2
fix=$src/tests/fixtures
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$src" || exit 1  # the config's paths are relative to the repository root
pass=0
failed=0
check() {  # check NAME EXPECTED_RC GREP_PATTERN -- command...
  local name=$1 want=$2 pat=$3
  shift 4
  "$@" >"$tmp/out" 2>&1
  local rc=$?
  if [ "$rc" -ne "$want" ] || ! grep -q -- "$pat" "$tmp/out"; then
    echo "FAIL: $name (exit $rc, want $want; pattern '$pat')"
    sed 's/^/    /' "$tmp/out" | head -20
    failed=$((failed + 1))
  else
    pass=$((pass + 1))
  fi
}
x() { "$bin" --threads 1 "$@"; }
cfg=configs/tiny-bert.yaml

check "train --help" 0 "--resume" -- "$bin" train --help
check "export --help" 0 "--merged" -- "$bin" export --help
check "corpus cache-teacher --help" 0 "--pairs" -- "$bin" corpus cache-teacher --help

# A full run: 20 steps, checkpoints, adapter and merged exports.
out=$tmp/run
check "train tiny bert" 0 "20 steps done" -- x train "$cfg" --set output_dir="$out"
[ "$(wc -l <"$out/metrics.jsonl")" -eq 20 ] || { echo "FAIL: metrics.jsonl has not 20 lines"; failed=$((failed + 1)); }
python3 - "$out/metrics.jsonl" <<'PY' || { echo "FAIL: metrics.jsonl fields"; failed=$((failed + 1)); }
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for k in ("step", "epoch", "loss", "loss_en", "loss_xx", "lr", "grad_norm", "pairs_per_s", "peak_rss_mb"):
    assert all(k in r for r in rows), k
assert [r["step"] for r in rows] == list(range(1, 21))
PY
for f in adapter/adapter_model.safetensors adapter/adapter_config.json merged/model.safetensors merged/tokenizer.json \
         merged/config.json checkpoints/step-15/state.json checkpoints/step-20/trainable.safetensors config.yaml; do
  [ -f "$out/$f" ] || { echo "FAIL: $out/$f missing"; failed=$((failed + 1)); }
done
[ ! -e "$out/checkpoints/step-10" ] || { echo "FAIL: checkpoint.keep 2 kept step-10"; failed=$((failed + 1)); }
check "embed with the merged model" 0 "1 item(s), dim 64" -- \
  x embed --model "$out/merged" --text "Speicher erschöpft" --out "$tmp/e.npy"
check "resume a finished run" 0 "resumed from" -- x train "$cfg" --set output_dir="$out" --resume
check "fresh run over checkpoints" 1 "already holds checkpoints" -- x train "$cfg" --set output_dir="$out"
check "resume with another lr" 1 "train.lr is 0.002 here but 0.001" -- \
  x train "$cfg" --set output_dir="$out" --set train.lr=2e-3 --resume

# Export from a checkpoint reproduces the end-of-training export byte for byte.
check "export a checkpoint" 0 "merged model of" -- \
  x export --checkpoint "$out/checkpoints/step-20" --adapter "$tmp/a2" --merged "$tmp/m2"
cmp -s "$out/adapter/adapter_model.safetensors" "$tmp/a2/adapter_model.safetensors" ||
  { echo "FAIL: exported adapter differs"; failed=$((failed + 1)); }
cmp -s "$out/merged/model.safetensors" "$tmp/m2/model.safetensors" ||
  { echo "FAIL: exported merged model differs"; failed=$((failed + 1)); }
check "export an output_dir (newest checkpoint)" 0 "step-20" -- x export --checkpoint "$out" --adapter "$tmp/a3"
check "export without outputs" 1 "give --adapter OUT and/or --merged OUT" -- x export --checkpoint "$out"
check "export a non-checkpoint" 1 "not a checkpoint folder" -- x export --checkpoint "$tmp" --adapter "$tmp/a4"

# Teacher cache.
check "cache-teacher" 0 "16 pairs, dim 64" -- \
  x corpus cache-teacher --model "$fix/models/tiny_bert" --pairs "$fix/train/pairs_tiny.jsonl" --out "$tmp/t.npy"
[ -f "$tmp/t.npy.json" ] || { echo "FAIL: no teacher cache sidecar"; failed=$((failed + 1)); }
check "train with the teacher cache" 0 "20 steps done" -- \
  x train "$cfg" --set output_dir="$tmp/run_cache" --set data.teacher_cache="$tmp/t.npy"
# Another model: the same folder with one byte more in config.json.
cp -r "$fix/models/tiny_bert" "$tmp/other" && echo " " >>"$tmp/other/config.json"
check "full fine-tuning needs the cache" 1 "data.teacher_cache" -- \
  x train "$cfg" --set output_dir="$tmp/run_full0" --set trainable=full
check "full fine-tuning with the cache" 0 "20 steps done" -- \
  x train "$cfg" --set output_dir="$tmp/run_full" --set trainable=full --set data.teacher_cache="$tmp/t.npy"
check "embed with the fully fine-tuned model" 0 "1 item(s), dim 64" -- \
  x embed --model "$tmp/run_full/merged" --text "hello" --out "$tmp/full.npy"
check "cache-teacher with another model" 0 "16 pairs" -- \
  x corpus cache-teacher --model "$tmp/other" --pairs "$fix/train/pairs_tiny.jsonl" --out "$tmp/t2.npy"
check "teacher cache of another model" 1 "was made by another model" -- \
  x train "$cfg" --set output_dir="$tmp/run_cache2" --set data.teacher_cache="$tmp/t2.npy"

# Bad configs.
printf 'model: m\ntrain: [1, 2\n' >"$tmp/bad.yaml"
check "malformed YAML" 1 "bad.yaml:3:1: not valid YAML" -- x train "$tmp/bad.yaml"
check "missing config" 1 "nope.yaml: does not exist" -- x train "$tmp/nope.yaml"
sed 's/^  lr: /  learning_rate: /' "$cfg" >"$tmp/unknown.yaml"
check "unknown key" 1 "unknown key 'train.learning_rate' (did you mean 'train.lr'?)" -- x train "$tmp/unknown.yaml"
check "unknown --set key" 1 "unknown key 'train.bach_size' (did you mean 'train.batch_size'?)" -- \
  x train "$cfg" --set train.bach_size=4
check "wrong type" 1 "train.batch_size must be an integer, found 'two'" -- x train "$cfg" --set train.batch_size=two
sed 's/^  batch_size: 2/  batch_size: [2]/' "$cfg" >"$tmp/type.yaml"
check "wrong type in file" 1 "type.yaml:17: train.batch_size must be an integer, found a list" -- x train "$tmp/type.yaml"
check "missing model" 1 "no_model: model folder does not exist" -- \
  x train "$cfg" --set output_dir="$tmp/r1" --set model="$tmp/no_model"
check "missing data" 1 "no.jsonl: the training pairs file (data.train) does not exist" -- \
  x train "$cfg" --set output_dir="$tmp/r2" --set data.train="$tmp/no.jsonl"
printf '{"text_en": "a", "text_xx": "b", "lang": "it"}\n{"text_en": "c", "text_xx": "", "lang": "it"}\n' >"$tmp/empty.jsonl"
check "empty text" 1 "empty.jsonl:2: field 'text_xx' is empty" -- \
  x train "$cfg" --set output_dir="$tmp/r3" --set data.train="$tmp/empty.jsonl"
printf 'not an image' >"$tmp/broken.png"
printf '{"text_en": "a", "text_xx": "b", "lang": "it", "image": "broken.png"}\n' >"$tmp/img.jsonl"
check "image with bert" 1 "img.jsonl:1: field 'image' is set, but the bert backbone takes text only" -- \
  x train "$cfg" --set output_dir="$tmp/r4" --set data.train="$tmp/img.jsonl"
[ ! -e "$tmp/r4/checkpoints" ] || { echo "FAIL: a refused run wrote checkpoints"; failed=$((failed + 1)); }

# A diverging run: the error names the step and the term; the last checkpoint stays and exports.
check "non-finite loss" 1 "step 2: loss term 'loss_en' is NaN" -- \
  x train "$cfg" --set output_dir="$tmp/nan" --set train.lr=1e30 --set train.warmup_steps=0 \
  --set checkpoint.every_steps=1
check "checkpoint before the failure loads" 0 "adapter of" -- \
  x export --checkpoint "$tmp/nan/checkpoints/step-1" --adapter "$tmp/nan_adapter"

echo "train CLI: $pass passed, $failed failed"
[ "$failed" -eq 0 ]
