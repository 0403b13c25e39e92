#!/usr/bin/env bash
# The fuzzers' starting inputs: real files of each format from tests/fixtures (and configs/), and a few made
# from them (trimmed safetensors and tokenizers, the tokenizer variants the golden test patches in, one text
# per file), so that each fuzzer starts inside its format. Nothing is committed: they are made in the build.
#   tests/fuzz/make_seeds.sh SOURCE_ROOT OUT_DIR     # OUT_DIR/<target>/ for each target of tests/fuzz/
# The corpus reader's seeds (OUT_DIR/corpus_reader/) are written by test_corpus_fuzz_replay instead.
set -euo pipefail
src=$(cd "$1" && pwd)
out=$2
fx=$src/tests/fixtures
for t in safetensors model_config npy tokenizer_json tokenizer_encode image mo_catalog train_config benchmark; do
  rm -rf "${out:?}/$t"
  mkdir -p "$out/$t"
done

# Files copied as they are: <target> <max bytes> <file>... (a fuzzer never grows an input past its -max_len,
# and larger seeds would only be cut).
copy() {
  local target=$1 max=$2
  shift 2
  local f
  for f in "$@"; do
    [ -f "$f" ] || continue
    [ "$(stat -c %s "$f")" -le "$max" ] || continue
    cp "$f" "$out/$target/$(realpath --relative-to="$fx" "$f" | tr / _)"
  done
}
copy safetensors 65536 "$fx"/train/*/*.safetensors "$fx"/peft/*/*.safetensors
copy model_config 65536 "$fx"/models/*/config.json "$fx"/models/*/sentence_bert_config.json \
  "$fx"/models/*/preprocessor_config.json "$fx"/images/preprocessor_config.json
copy npy 16384 $(find "$fx" -name '*.npy' | sort)
copy image 65536 "$fx"/images/*.png "$fx"/images/*.jpg "$fx"/corpus_build/xmmeb/images/*
copy mo_catalog 65536 $(find "$fx" -name '*.mo' | sort)
copy tokenizer_json 131072 "$fx"/models/*/tokenizer.json "$fx"/tokenizer/*/tokenizer.json
cp "$src"/configs/*.yaml "$out/train_config/"

python3 - "$src" "$out" <<'PY'
import copy, json, os, struct, sys

src, out = sys.argv[1], sys.argv[2]
fx = os.path.join(src, "tests", "fixtures")

def write(target, name, data):
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

# safetensors: the first tensors of the tiny BERT, re-laid out, and the same bytes declared as other dtypes.
def safetensors(entries, metadata=None):
    header, buf = {}, b""
    for name, dtype, shape, data in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(buf), len(buf) + len(data)]}
        buf += data
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + buf

with open(os.path.join(fx, "models", "tiny_bert", "model.safetensors"), "rb") as f:
    raw = f.read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
base = 8 + n
small = sorted((k, v) for k, v in header.items()
               if k != "__metadata__" and v["data_offsets"][1] - v["data_offsets"][0] <= 512)[:4]
tensors = [(k, v["dtype"], v["shape"], raw[base + v["data_offsets"][0]:base + v["data_offsets"][1]])
           for k, v in small]
write("safetensors", "trimmed_1.safetensors", safetensors(tensors[:1], {"format": "pt"}))
write("safetensors", "trimmed_4.safetensors", safetensors(tensors))
name, _, _, data = tensors[0]
for dtype, size in (("BF16", 2), ("F16", 2), ("F64", 8), ("I64", 8), ("I32", 4), ("I16", 2), ("I8", 1),
                    ("U8", 1), ("BOOL", 1)):
    write("safetensors", f"as_{dtype.lower()}.safetensors", safetensors([(name, dtype, [len(data) // size], data)]))
write("safetensors", "empty.safetensors", safetensors([]))
write("safetensors", "scalar_and_empty.safetensors",
      safetensors([("s", "F32", [], data[:4]), ("e", "F16", [0, 3], b"")]))

# tokenizer.json: the golden test's variants (JSON patches over the fixture tokenizers; the MiniLM ones apply
# to the tiny BERT's, which has the same layout), and every tokenizer trimmed to its first ids.
def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)

bases = {"bpe_llama": os.path.join(fx, "tokenizer", "bpe_llama", "tokenizer.json"),
         "bpe_metaspace": os.path.join(fx, "tokenizer", "bpe_metaspace", "tokenizer.json"),
         "bpe_prefix_suffix": os.path.join(fx, "tokenizer", "bpe_prefix_suffix", "tokenizer.json"),
         "minilm": os.path.join(fx, "models", "tiny_bert", "tokenizer.json"),
         "tiny_phi3v": os.path.join(fx, "models", "tiny_phi3v", "tokenizer.json")}

def patch(doc, ops):
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        if op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif isinstance(parent, list):
            if last == "-":
                parent.append(op["value"])
            elif op["op"] == "add":
                parent.insert(int(last), op["value"])
            else:
                parent[int(last)] = op["value"]
        else:
            parent[last] = op["value"]
    return doc

def trim(doc, keep=300, keep_merges=200):
    # The first `keep` ids (special and byte tokens, single characters), the first merges with their parts
    # and results, ids renumbered in their order (so the first ones, which post-processors name, stay).
    doc = copy.deepcopy(doc)
    m = doc["model"]
    wanted = {t for t, i in m["vocab"].items() if i < keep}
    if m.get("type") == "BPE":
        merges = m.get("merges", [])[:keep_merges]
        pre = m.get("continuing_subword_prefix") or ""
        suf = m.get("end_of_word_suffix") or ""
        for mg in merges:
            a, b = mg.split(" ", 1) if isinstance(mg, str) else mg
            wanted |= {a, b, a + b, a + (b[len(pre):] if pre and b.startswith(pre) else b),
                       (a[:-len(suf)] if suf and a.endswith(suf) else a) + b}
        m["merges"] = merges
    kept = sorted((i, t) for t, i in m["vocab"].items() if t in wanted)
    m["vocab"] = {t: n for n, (_, t) in enumerate(kept)}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))

docs = {name: load(path) for name, path in bases.items()}
for v in load(os.path.join(fx, "tokenizer", "variants", "variants.json")):
    if v["base"] in docs:
        write("tokenizer_json", f"variant_{v['name']}_trimmed.json", trim(patch(docs[v["base"]], v["patch"])))
for name, doc in docs.items():
    write("tokenizer_json", f"{name}_trimmed.json", trim(doc))

# Texts to encode, one per file: every 10th golden sentence and every 2nd of the variants' set.
for path, step, prefix in ((os.path.join(fx, "tokenizer", "sentences.jsonl"), 10, "s"),
                           (os.path.join(fx, "tokenizer", "variants", "sentences.jsonl"), 2, "v")):
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    for i in range(0, len(lines), step):
        text = json.loads(lines[i])
        text = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False)
        data = text.encode("utf-8", "surrogatepass")
        if len(data) <= 4096:
            write("tokenizer_encode", f"{prefix}{i:04d}.txt", data)

# Training configs with `--set` overrides after NUL bytes (fuzz_train_config's input layout).
with open(os.path.join(src, "configs", "tiny-bert.yaml"), encoding="utf-8") as f:
    yaml = f.read()
write("train_config", "tiny-bert_overrides.yaml",
      yaml + "\0train.lr=2e-5\0lora.targets=[query, value]\0model.path=other\0parallel.strategy=hybrid")
write("train_config", "overrides_only.yaml", "\0model=m\0data.train=t.jsonl\0output_dir=o\0train.betas=[0.9, 0.95]")

# Benchmark folders: the first byte picks the file the rest replaces (fuzz_benchmark.cpp).
bench = os.path.join(fx, "eval", "tiny_benchmark")
for kind, name in enumerate(("benchmark.json", "de_to_en.jsonl", "english.jsonl")):
    with open(os.path.join(bench, name), "rb") as f:
        write("benchmark", f"{kind}_{name}", bytes([kind]) + f.read())
PY
for t in safetensors model_config npy tokenizer_json tokenizer_encode image mo_catalog train_config benchmark; do
  printf '%s: %s seeds, %s bytes\n' "$t" "$(ls "$out/$t" | wc -l)" "$(du -sb "$out/$t" | cut -f1)"
done
