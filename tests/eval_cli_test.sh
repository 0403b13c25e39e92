#!/usr/bin/env bash
# End-to-end checks of `xvlm2vec eval run` and `eval make-text-benchmark`: exit codes, messages, the report
# files, and bad inputs (missing model, adapter, benchmark or corpus; a broken benchmark; a --train-dir
# without metrics.jsonl).
#   eval_cli_test.sh XVLM2VEC_BINARY FIXTURES_DIR
set -u
bin=$1
fix=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
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
model=$fix/models/tiny_bert
adapter=$fix/peft/tiny_bert_adapter
bench=$fix/eval/tiny_benchmark

check "eval --help" 0 "make-text-benchmark" -- "$bin" eval --help
check "eval run --help" 0 "--train-dir" -- "$bin" eval run --help
check "make-text-benchmark --help" 0 "--candidates" -- "$bin" eval make-text-benchmark --help
check "eval without subcommand" 106 "subcommand" -- "$bin" eval

mkdir -p "$tmp/run"
printf '{"step": 1, "loss": 1.0, "loss_en": 0.5, "loss_xx": 1.5}\n{"step": 2, "loss": 0.5, "loss_en": 0.25, "loss_xx": 0.75}\n' \
  >"$tmp/run/metrics.jsonl"
check "eval with adapter" 0 "| average | xx→en |" -- \
  x eval run --model "$model" --adapter "$adapter" --benchmark "$bench" --out "$tmp/r1" --train-dir "$tmp/run"
grep -q "English preservation: mean cosine" "$tmp/out" || { echo "FAIL: no English cosine on stdout"; failed=$((failed + 1)); }
grep -q "eval: teacher 50/50 items" "$tmp/out" || { echo "FAIL: no progress on stderr"; failed=$((failed + 1)); }
for f in results.json results.md p_at_1.svg loss.svg; do
  [ -s "$tmp/r1/$f" ] || { echo "FAIL: $f missing"; failed=$((failed + 1)); }
done
python3 - "$tmp/r1" <<'PY' || { echo "FAIL: report files"; failed=$((failed + 1)); }
import json, sys, xml.dom.minidom
d = sys.argv[1]
r = json.load(open(d + "/results.json"))
assert r["columns"] == ["before", "after"] and len(r["tasks"]) == 5
assert set(r["averages"]) == {"xx->en", "en->xx"} and 0 < r["english"]["cosine"] <= 1
for f in ("p_at_1.svg", "loss.svg"):
    assert xml.dom.minidom.parse(d + "/" + f).documentElement.tagName == "svg", f
PY
check "eval without adapter, quiet" 0 "| de | de→en |" -- \
  x eval run --model "$model" --benchmark "$bench" --out "$tmp/r2" --quiet
grep -q "eval:" "$tmp/out" && { echo "FAIL: --quiet printed progress"; failed=$((failed + 1)); }

check "missing model" 1 "nope: model folder does not exist" -- \
  x eval run --model "$tmp/nope" --benchmark "$bench" --out "$tmp/r3"
check "missing adapter" 1 "no_adapter: adapter folder does not exist" -- \
  x eval run --model "$model" --adapter "$tmp/no_adapter" --benchmark "$bench" --out "$tmp/r3"
check "missing benchmark" 1 "no_bench: benchmark folder does not exist" -- \
  x eval run --model "$model" --benchmark "$tmp/no_bench" --out "$tmp/r3"
check "train-dir without metrics" 1 "no metrics.jsonl here" -- \
  x eval run --model "$model" --benchmark "$bench" --out "$tmp/r3" --train-dir "$tmp"
cp -r "$bench" "$tmp/broken"
sed -i '2s/"task_type": "retrieval"/"task_type": "captioning"/' "$tmp/broken/en_to_es.jsonl"
check "broken benchmark" 1 "en_to_es.jsonl:2: field 'task_type' is 'captioning'" -- \
  x eval run --model "$model" --benchmark "$tmp/broken" --out "$tmp/r3"
[ ! -e "$tmp/r3" ] || { echo "FAIL: a refused run wrote a report"; failed=$((failed + 1)); }
check "missing corpus" 1 "nope.h5: corpus file does not exist" -- \
  x eval make-text-benchmark --corpus "$tmp/nope.h5" --out "$tmp/b"
check "too few candidates" 105 "--candidates: must be a number in .2, 1073741824.*found .1." -- \
  x eval make-text-benchmark --corpus "$tmp/nope.h5" --out "$tmp/b" --candidates 1

# A text longer than the model's limit (the tiny BERT's 128 tokens): an error naming the query, or cut with --truncate.
long=$(printf 'word %.0s' $(seq 1 300))
mkdir -p "$tmp/long"
printf '{"format": "xvlm2vec-benchmark", "format_version": 1, "name": "long", "tasks": [{"name": "it->en", "file": "t.jsonl", "language": "it", "direction": "xx->en", "task_type": "retrieval", "num_queries": 1, "num_candidates": 2}], "english": {"file": "e.jsonl", "num_texts": 0}}\n' >"$tmp/long/benchmark.json"
printf '{"qry_text": "%s", "tgt_text": ["a word", "another word"], "lang": "it", "task_type": "retrieval"}\n' "$long" >"$tmp/long/t.jsonl"
: >"$tmp/long/e.jsonl"
check "eval of a text over the model's limit" 1 "t.jsonl:1 (qry_text).*--truncate" -- \
  x eval run --quiet --model "$model" --benchmark "$tmp/long" --out "$tmp/rl"
check "eval --truncate cuts it" 0 "| it | it→en |" -- \
  x eval run --quiet --truncate --model "$model" --benchmark "$tmp/long" --out "$tmp/rl2"

echo "eval CLI: $pass passed, $failed failed"
[ "$failed" -eq 0 ]
