#!/usr/bin/env bash
# The scaling model's step-time validation on this machine's CPU (docs/scaling.md section 9), end to end:
#   1. a corpus of fixed-length pairs (every micro-batch is B x T tokens, as the model assumes): 30 whole-word
#      tokens per side from the model's vocabulary, + [CLS] and [SEP] = 32
#   2. the link: bench_comm's all-gather timings at 2 and 3 ranks, fitted by `scaling_model fit-link` over the
#      sizes the trainer gathers, one fit per rank count
#   3. per-unit compute: bench_units alone, and 2 and 3 copies at once (what each rank gets when ranks share
#      the cores), merged into one --measured-units file with by_ranks
#   4. the trainer (all-MiniLM-L6-v2, LoRA as configs/quickstart.yaml, batch 8, grad_accum 2, one thread per
#      rank) at 1, 2 and 3 ranks: the same work per rank (weak scaling)
#   5. `scaling_model validate` on the three metrics.jsonl: DIR/validation.md and validation.json
# usage: bash benchmarks/scaling/validate_cpu.sh [DIR]     (default runs/scaling-validation)
# Needs the build (build/) with MPI and the model (build/models/all-MiniLM-L6-v2): `bash scripts/run.sh` makes
# both. Takes about a minute; run it on an otherwise idle machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=${1:-runs/scaling-validation}
model=build/models/all-MiniLM-L6-v2
bin=build/launch/xvlm2vec
for f in "$bin" build/benchmarks/bench_units build/benchmarks/bench_comm build/benchmarks/scaling/scaling_model \
         "$model/config.json" "$model/tokenizer.json"; do
  [ -e "$f" ] || { echo "validate_cpu: $f is missing: run 'bash scripts/run.sh' first (it builds and fetches the model)" >&2; exit 1; }
done
command -v mpiexec > /dev/null || { echo "validate_cpu: mpiexec not found (install Open MPI)" >&2; exit 1; }
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
mpi() { local n=$1; shift; mpiexec -np "$n" --oversubscribe "$@"; }
mkdir -p "$out"
B=8 T=32 GA=2 STEPS=12

echo "== 1. corpus: fixed-length pairs"
python3 - "$model/tokenizer.json" "$out/pairs.jsonl" $((T - 2)) <<'PY'
import json, random, sys
vocab = json.load(open(sys.argv[1]))["model"]["vocab"]
words = sorted(w for w in vocab if w.isascii() and w.isalpha() and w.islower() and len(w) >= 4)
rng = random.Random(7)
n = int(sys.argv[3])
with open(sys.argv[2], "w") as f:
    for i in range(1024):
        f.write(json.dumps({"text_en": " ".join(rng.choice(words) for _ in range(n)),
                            "text_xx": " ".join(rng.choice(words) for _ in range(n)), "lang": "it"}) + "\n")
PY

echo "== 2. link: all-gather timings at 2 and 3 ranks"
for p in 2 3; do
  mpi $p build/benchmarks/bench_comm --min-bytes 1048576 --max-bytes 33554432 --json "$out/comm-$p.json" > "$out/comm-$p.md"
done
# Fitted over the gathered sizes the trainer moves: a layer of all-MiniLM-L6-v2 is 7.1 MB, the embeddings 47.6 MB
# (the loopback's bandwidth falls once a buffer leaves the caches, so the size range matters).
build/benchmarks/scaling/scaling_model fit-link --comm "$out/comm-2.json" "$out/comm-3.json" --min-bytes 4000000 \
  --max-bytes 64000000 --out "$out/link.json"

echo "== 3. per-unit compute: 1, 2 and 3 copies at once"
units=(--model "$model" --batch $B --tokens $T --lora-rank 16 --lora-alpha 32 --lora-dropout 0.05
       --targets query,key,value,dense
       --threads 1 --reps 20)
build/benchmarks/bench_units "${units[@]}" --out "$out/units-1.json"
for p in 2 3; do mpi $p build/benchmarks/bench_units "${units[@]}" --out "$out/units-$p.json"; done
python3 - "$out" <<'PY'
import json, sys
d = sys.argv[1]
one = json.load(open(d + "/units-1.json"))
merged = {"units": one["units"], "optimizer_s": one["optimizer_s"], "overhead_s": one["overhead_s"],
          "by_ranks": {}, "notes": one["notes"] + "; by_ranks: 2 and 3 copies running at once"}
for p in (2, 3):
    u = json.load(open("%s/units-%d.json" % (d, p)))
    merged["by_ranks"][str(p)] = {"units": u["units"], "optimizer_s": u["optimizer_s"], "overhead_s": u["overhead_s"]}
json.dump(merged, open(d + "/measured-units.json", "w"), indent=2)
PY

echo "== 4. the trainer at 1, 2 and 3 ranks (batch $B, grad_accum $GA, $STEPS steps)"
run=(train configs/quickstart.yaml --set model="$model" --set data.train="$out/pairs.jsonl" --set data.workers=1
     --set train.batch_size=$B --set train.grad_accum=$GA --set train.max_steps=$STEPS --set train.threads=1
     --set log.every_steps=1 --set checkpoint.every_steps=100000 --set export.adapter=false --set export.merged=false
     --quiet)
"$bin" "${run[@]}" --set output_dir="$out/train-1"
for p in 2 3; do mpi $p "$bin" "${run[@]}" --set output_dir="$out/train-$p"; done

echo "== 5. predicted against measured"
python3 - "$model/config.json" "$out/validate-config.json" $B $GA $T <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
json.dump({"arch": "bert", "vocab_size": c["vocab_size"], "hidden_size": c["hidden_size"],
           "intermediate_size": c["intermediate_size"], "num_hidden_layers": c["num_hidden_layers"],
           "max_position_embeddings": c["max_position_embeddings"], "type_vocab_size": c["type_vocab_size"],
           "lora_rank": 16, "lora_targets": ["query", "key", "value", "dense"],
           "pairs_per_rank": int(sys.argv[3]), "grad_accum": int(sys.argv[4]), "tokens_per_side": int(sys.argv[5]),
           "checkpointing": False, "strategy": "full", "deterministic": False},
          open(sys.argv[2], "w"), indent=2)
PY
build/benchmarks/scaling/scaling_model validate --config "$out/validate-config.json" --bandwidth "$out/link.json" \
  --measured-units "$out/measured-units.json" \
  --runs "$out/train-1/metrics.jsonl:1" "$out/train-2/metrics.jsonl:2" "$out/train-3/metrics.jsonl:3" --out "$out"
