#!/usr/bin/env bash
# End-to-end CLI checks: exit codes, messages, outputs.
#   cli_test.sh XVLM2VEC_BINARY FIXTURES_DIR
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

check "help" 0 "embed" -- "$bin" --help
check "embed --help" 0 "--model" -- "$bin" embed --help
check "init-model --help" 0 "--preset" -- "$bin" init-model --help
check "no subcommand" 106 "subcommand" -- "$bin"
check "unknown option" 109 "--bogus" -- "$bin" embed --model "$fix/models/tiny_bert" --out "$tmp/a.npy" --bogus
check "missing model folder" 1 "$tmp/nope: model folder does not exist" -- \
  "$bin" embed --model "$tmp/nope" --text hi --out "$tmp/a.npy"
check "no inputs" 1 "give --text, --image or --input" -- "$bin" embed --model "$fix/models/tiny_bert" --out "$tmp/a.npy"
check "embed tiny bert" 0 "2 item(s), dim 64" -- \
  "$bin" embed --model "$fix/models/tiny_bert" --text "hello world" --text "ciao mondo" --out "$tmp/b.npy" --jsonl "$tmp/b.jsonl"
python3 - "$tmp/b.npy" "$tmp/b.jsonl" <<'PY' || { echo "FAIL: npy/jsonl output"; failed=$((failed + 1)); }
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
assert raw[:6] == b"\x93NUMPY", "magic"
hlen = struct.unpack("<H", raw[8:10])[0]
hdr = raw[10:10 + hlen].decode()
assert "'descr': '<f4'" in hdr and "'shape': (2, 64)" in hdr, hdr
assert len(raw) == 10 + hlen + 2 * 64 * 4
rows = [json.loads(l) for l in open(sys.argv[2])]
assert len(rows) == 2 and rows[1]["text"] == "ciao mondo" and len(rows[1]["embedding"]) == 64
v = struct.unpack("<64f", raw[10 + hlen + 256:10 + hlen + 512])
assert max(abs(a - b) for a, b in zip(v, rows[1]["embedding"])) < 1e-6
PY
printf '{"text": "ok"}\n{"text": 5}\n' >"$tmp/bad.jsonl"
check "bad jsonl field" 1 "bad.jsonl:2: field 'text' must be a string" -- \
  "$bin" embed --model "$fix/models/tiny_bert" --input "$tmp/bad.jsonl" --out "$tmp/c.npy"
printf '{"text": "ok"}\n{oops\n' >"$tmp/bad2.jsonl"
check "bad jsonl syntax" 1 "bad2.jsonl:2: not valid JSON" -- \
  "$bin" embed --model "$fix/models/tiny_bert" --input "$tmp/bad2.jsonl" --out "$tmp/c.npy"
check "image with bert" 1 "embeds text only" -- \
  "$bin" embed --model "$fix/models/tiny_bert" --text "x" --image "$fix/images/square_256.png" --out "$tmp/c.npy"
[ ! -e "$tmp/c.npy" ] || { echo "FAIL: a failed run left an output file"; failed=$((failed + 1)); }
check "init-model tiny phi3_v" 0 "parameters written" -- "$bin" init-model --arch phi3_v --preset tiny --out "$tmp/p"
check "embed image with tiny phi3_v" 0 "1 item(s), dim 64" -- \
  "$bin" embed --model "$tmp/p" --image "$fix/images/tiny_50x30.png" --out "$tmp/d.npy"
check "init-model tiny bert, bf16" 0 "parameters written" -- "$bin" init-model --arch bert --preset tiny --dtype bf16 --out "$tmp/q"
check "embed with it" 0 "1 item(s), dim 64" -- "$bin" embed --model "$tmp/q" --text "déjà vu" --normalize --out "$tmp/e.npy"
check "bad preset" 1 "--preset for bert must be tiny or minilm" -- "$bin" init-model --arch bert --preset phi35v --out "$tmp/r"

# The corpus tools end to end on the gettext fixture catalogs.
loc=$fix/corpus_build/locale
check "corpus build gettext" 0 "pairs, 0 images" -- "$bin" corpus build --from gettext --locale-dir "$loc" --langs it,de \
  --tokenizer "$fix/models/tiny_bert/tokenizer.json" --out "$tmp/c.h5"
check "corpus inspect" 0 "pairs per language: it" -- "$bin" corpus inspect "$tmp/c.h5"
check "corpus validate" 0 "is valid" -- "$bin" corpus validate "$tmp/c.h5" --tokenizer "$fix/models/tiny_bert/tokenizer.json"
check "corpus validate, another tokenizer" 1 "made by the tokenizer" -- \
  "$bin" corpus validate "$tmp/c.h5" --tokenizer "$fix/tokenizer/bpe_llama/tokenizer.json"
check "corpus split by source" 0 "held-out sources:" -- "$bin" corpus split "$tmp/c.h5" --heldout-fraction 0.3 \
  --train "$tmp/tr.h5" --heldout "$tmp/ho.h5"
cp "$tmp/c.h5" "$tmp/c_copy.h5"
check "corpus split, --train = --heldout" 1 "are the same file" -- "$bin" corpus split "$tmp/c.h5" \
  --heldout-fraction 0.3 --train "$tmp/same.h5" --heldout "$tmp/./same.h5"
check "corpus split, --train = the input" 1 "is the input corpus" -- "$bin" corpus split "$tmp/c.h5" \
  --heldout-fraction 0.3 --train "$tmp/c.h5" --heldout "$tmp/ho3.h5"
check "corpus split, --heldout = the input" 1 "is the input corpus" -- "$bin" corpus split "$tmp/c.h5" \
  --heldout-fraction 0.3 --train "$tmp/tr3.h5" --heldout "$tmp/../$(basename "$tmp")/c.h5"
if ! cmp -s "$tmp/c.h5" "$tmp/c_copy.h5" || [ -e "$tmp/same.h5" ] || [ -e "$tmp/ho3.h5" ] || [ -e "$tmp/tr3.h5" ]; then
  echo "FAIL: a refused corpus split changed the input or left an output"
  failed=$((failed + 1))
else
  pass=$((pass + 1))
fi
check "corpus split, unknown source" 1 "no source named 'nope'" -- "$bin" corpus split "$tmp/c.h5" \
  --heldout-sources nope --train "$tmp/tr2.h5" --heldout "$tmp/ho2.h5"
check "corpus cache-teacher into the corpus" 0 "/teacher" -- "$bin" corpus cache-teacher --model "$fix/models/tiny_bert" \
  "$tmp/tr.h5"
check "corpus inspect shows the teacher" 0 "teacher: (" -- "$bin" corpus inspect "$tmp/tr.h5"
check "corpus cache-teacher, both forms" 1 "give either a CORPUS" -- "$bin" corpus cache-teacher \
  --model "$fix/models/tiny_bert" "$tmp/tr.h5" --pairs "$fix/train/pairs_tiny.jsonl"
head -c 5000 "$tmp/c.h5" > "$tmp/cut.h5"
check "corpus validate, truncated" 1 "INVALID" -- "$bin" corpus validate "$tmp/cut.h5"
check "corpus inspect, not a corpus" 1 "not an HDF5 file" -- "$bin" corpus inspect "$fix/train/pairs_tiny.jsonl"

echo "$pass passed, $failed failed"
[ "$failed" -eq 0 ]
