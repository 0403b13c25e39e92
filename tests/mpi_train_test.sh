#!/usr/bin/env bash
# Distributed training end to end under mpirun (label mpi), on configs/tiny-bert.yaml:
#   1. deterministic reduction: 1 process x grad_accum 6 = 2 ranks x 3 = 3 ranks x 2, for every strategy:
#      identical metrics (losses, lr, gradient norm) and byte-identical adapters
#   2. the default (fast) reduction: run-to-run bit-identical at 3 ranks, and within fp32 tolerance of 1 process
#   3. resuming at other world sizes: 2 ranks -> 3 ranks -> 1 process equals the straight run
#   4. the bytes each rank logs per step equal docs/distributed.md's formula
#   5. faults: a rank killed (SIGKILL), stopped (SIGSTOP: the heartbeat names it) or failing stops every rank
#      within seconds, naming the rank; the last checkpoint stays whole and the run resumes from it to the
#      straight run's result
#   6. phi3_v (configs/tiny-phi3v.yaml: 7 of 12 pairs with an image, so one rank's micro-batch may have images
#      while another's has none; decoder and tower adapters, prefix loss) with its base sharded in units (CLIP
#      layer groups, projector, embeddings, decoder layers): 1 x 6 = 2 x 3 = 3 x 2 bit-identical, the default
#      reduction within 1e-4, and the frozen bytes per step equal to the formula
#   7. model.weight_dtype bf16: the frozen base sharded and gathered in bf16 (half the bytes held and moved) and
#      widened per unit: 2 ranks x 3 = 1 process x 6 bit-identical, at half the f32 run's frozen bytes
# usage: mpi_train_test.sh XVLM2VEC REPO_ROOT MPIEXEC
set -euo pipefail
bin=$1 root=$2 mpiexec=$3
cd "$root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
mpi() { local n=$1; shift; "$mpiexec" -np "$n" --oversubscribe "$bin" "$@"; }
base=(--set train.threads=1 --set data.workers=1 --set train.max_steps=6 --set checkpoint.every_steps=2
      --set checkpoint.keep=5 --set export.merged=false --quiet)
fail() { echo "FAIL: $*" >&2; exit 1; }

# Compares two runs: metrics (all but timing/memory/communication fields) and the adapter, exactly or within tol.
compare() {  # compare DIR_A DIR_B TOL
  python3 - "$1" "$2" "$3" <<'PY'
import json, struct, sys
a, b, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
keep = ("step", "epoch", "loss", "loss_en", "loss_xx", "lr", "grad_norm")
def metrics(d):
    return [{k: v for k, v in json.loads(l).items() if k in keep} for l in open(d + "/metrics.jsonl")]
def tensors(d):
    raw = open(d + "/adapter/adapter_model.safetensors", "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n]); out = {}
    for k, v in head.items():
        if k == "__metadata__": continue
        s, e = v["data_offsets"]
        out[k] = struct.unpack("<%df" % ((e - s) // 4), raw[8 + n + s:8 + n + e])
    return out
ma, mb = metrics(a), metrics(b)
assert len(ma) == len(mb) and len(ma) > 0, (a, b, len(ma), len(mb))
ta, tb = tensors(a), tensors(b)
assert ta.keys() == tb.keys()
if tol == 0:
    assert ma == mb, "metrics differ:\n%s\n%s" % (ma, mb)
    assert open(a + "/adapter/adapter_model.safetensors", "rb").read() == open(b + "/adapter/adapter_model.safetensors", "rb").read(), "adapters differ"
else:
    for x, y in zip(ma, mb):
        for k in keep:
            assert abs(x[k] - y[k]) <= tol * max(1.0, abs(x[k])), (k, x, y)
    worst = max(abs(p - q) for k in ta for p, q in zip(ta[k], tb[k]))
    scale = max(abs(p) for k in ta for p in ta[k])
    assert worst <= tol * scale, "adapters differ by %g (scale %g)" % (worst, scale)
    print("  max adapter difference %.3g (of %.3g)" % (worst, scale))
PY
}

echo "== 1. deterministic reduction: 1 x 6 = 2 x 3 = 3 x 2 micro-batches, every strategy"
det=(--set parallel.deterministic=true)
"$bin" train configs/tiny-bert.yaml "${base[@]}" "${det[@]}" --set train.grad_accum=6 --set output_dir="$tmp/one"
for s in full grad_op none hybrid; do
  extra=()
  [ "$s" = hybrid ] && extra=(--set parallel.ranks_per_node=1)
  mpi 2 train configs/tiny-bert.yaml "${base[@]}" "${det[@]}" --set train.grad_accum=3 --set parallel.strategy=$s \
    "${extra[@]}" --set output_dir="$tmp/two-$s"
  compare "$tmp/one" "$tmp/two-$s" 0 || fail "2 ranks ($s) differ from 1 process"
  echo "  2 ranks, $s: bit-identical"
done
mpi 3 train configs/tiny-bert.yaml "${base[@]}" "${det[@]}" --set train.grad_accum=2 --set output_dir="$tmp/three"
compare "$tmp/one" "$tmp/three" 0 || fail "3 ranks differ from 1 process"
mpi 3 train configs/tiny-bert.yaml "${base[@]}" "${det[@]}" --set train.grad_accum=2 \
  --set parallel.replicate_trainable=true --set output_dir="$tmp/three-rep"
compare "$tmp/one" "$tmp/three-rep" 0 || fail "3 ranks (replicated adapters) differ from 1 process"
echo "  3 ranks (sharded and replicated adapters): bit-identical"
# hybrid on 2 "nodes" of 2 ranks: sharded within a node, replicated across
"$bin" train configs/tiny-bert.yaml "${base[@]}" "${det[@]}" --set train.grad_accum=4 --set output_dir="$tmp/one4"
mpi 4 train configs/tiny-bert.yaml "${base[@]}" "${det[@]}" --set train.grad_accum=1 --set parallel.strategy=hybrid \
  --set parallel.ranks_per_node=2 --set output_dir="$tmp/four-hybrid"
compare "$tmp/one4" "$tmp/four-hybrid" 0 || fail "4 ranks (hybrid, 2 x 2) differ from 1 process"
echo "  4 ranks, hybrid (2 nodes x 2): bit-identical"

echo "== 2. default reduction: run to run identical, and within fp32 tolerance of one process"
"$bin" train configs/tiny-bert.yaml "${base[@]}" --set train.grad_accum=6 --set output_dir="$tmp/one-f"
for run in a b; do
  mpi 3 train configs/tiny-bert.yaml "${base[@]}" --set train.grad_accum=2 --set output_dir="$tmp/three-f-$run"
done
compare "$tmp/three-f-a" "$tmp/three-f-b" 0 || fail "two 3-rank runs differ"
compare "$tmp/one-f" "$tmp/three-f-a" 1e-4 || fail "3 ranks are not within 1e-4 of 1 process"
"$bin" train configs/tiny-bert.yaml "${base[@]}" --set train.grad_accum=4 --set output_dir="$tmp/one4-f"
mpi 4 train configs/tiny-bert.yaml "${base[@]}" --set train.grad_accum=1 --set parallel.strategy=hybrid \
  --set parallel.ranks_per_node=2 --set output_dir="$tmp/four-f-hybrid"
compare "$tmp/one4-f" "$tmp/four-f-hybrid" 1e-4 || fail "4 ranks (hybrid) are not within 1e-4 of 1 process"
for s in grad_op none; do
  mpi 2 train configs/tiny-bert.yaml "${base[@]}" --set train.grad_accum=3 --set parallel.strategy=$s --set output_dir="$tmp/two-f-$s"
  compare "$tmp/one-f" "$tmp/two-f-$s" 1e-4 || fail "2 ranks ($s) are not within 1e-4 of 1 process"
done
echo "  3 ranks twice: bit-identical; 2 and 3 ranks vs 1 process: within 1e-4"

echo "== 3. resume at other world sizes: 2 ranks (2 steps) -> 3 ranks (2 steps) -> 1 process (to the end)"
mpi 2 train configs/tiny-bert.yaml "${base[@]}" "${det[@]}" --set train.grad_accum=3 --set output_dir="$tmp/reshard" --stop-after 2
mpi 3 train configs/tiny-bert.yaml "${base[@]}" "${det[@]}" --set train.grad_accum=2 --set output_dir="$tmp/reshard" --resume --stop-after 2
"$bin" train configs/tiny-bert.yaml "${base[@]}" "${det[@]}" --set train.grad_accum=6 --set output_dir="$tmp/reshard" --resume
compare "$tmp/one" "$tmp/reshard" 0 || fail "2 -> 3 -> 1 ranks differs from the straight run"
cmp "$tmp/one/checkpoints/step-6/optimizer-00000-of-00001.safetensors" \
    "$tmp/reshard/checkpoints/step-6/optimizer-00000-of-00001.safetensors" || fail "Adam moments differ after re-sharding"
# A step must cover the same micro-batches: grad_accum x ranks may not change.
if mpi 2 train configs/tiny-bert.yaml "${base[@]}" "${det[@]}" --set train.grad_accum=2 --set output_dir="$tmp/reshard" \
     --resume > "$tmp/bad.log" 2>&1; then fail "a resume with other micro-batches per step was accepted"; fi
grep -q "keep train.grad_accum x ranks" "$tmp/bad.log" || { cat "$tmp/bad.log"; fail "no clear message"; }
echo "  bit-identical to the straight run; a resume with another global batch is refused"

echo "== 4. communication accounting = docs/distributed.md"
python3 - "$tmp" tests/fixtures/models/tiny_bert/config.json <<'PY'
import json, struct, sys
tmp, cfgp = sys.argv[1], sys.argv[2]
c = json.load(open(cfgp))
C, I, V, P, Ty, L = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["max_position_embeddings"], c["type_vocab_size"], c["num_hidden_layers"]
emb = V * C + P * C + Ty * C + 2 * C
layer = 3 * C * C + 3 * C + C * C + C + 2 * C + I * C + I + C * I + C + 2 * C
raw = open(tmp + "/one/adapter/adapter_model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
T = sum((v["data_offsets"][1] - v["data_offsets"][0]) // 4 for k, v in json.loads(raw[8:8 + n]).items() if k != "__metadata__")
K = 4096
def ceil(a, b): return -(-a // b)
def expect(W, ga, strategy, det, g=None):
    Pd = ceil(T, W * K) * W * K
    frozen = 0
    if strategy in ("full", "hybrid"):
        n_ = W if strategy == "full" else g
        sh = lambda u: ceil(u, n_)
        per_mb = (n_ - 1) * 4 * (sh(emb) + L * sh(layer) + (L - 1) * sh(layer))
        frozen = ga * per_mb
    if det:
        Sw = Pd // W
        grad = (W - 1) * ga * Sw * 4
        param = (W - 1) * (Sw // K) * 8 + (W - 1) * Sw * 4
        if strategy == "hybrid":  # the whole gradient, then the node's shard of parameters
            param += (g - 1) * (Pd // g) * 4
        return frozen, grad, param
    if strategy in ("full", "grad_op"):
        S = Pd // W
        return frozen, (W - 1) * S * 4, (W - 1) * (S // K) * 8 + (W - 1) * S * 4
    if strategy == "none":
        return frozen, 2 * (W - 1) * Pd * 4 // W, 0
    if strategy == "hybrid":  # reduce-scatter in the node, all-reduce of the shard across the a = W / g nodes
        S, a = Pd // g, W // g
        return frozen, (g - 1) * S * 4 + 2 * (a - 1) * S * 4 // a, (g - 1) * (S // K) * 8 + (g - 1) * S * 4
    raise SystemExit("no formula for " + strategy)
checks = [("two-full", 2, 3, "full", True, None), ("two-grad_op", 2, 3, "grad_op", True, None),
          ("two-none", 2, 3, "none", True, None), ("two-hybrid", 2, 3, "hybrid", True, 1),
          ("three", 3, 2, "full", True, None), ("three-f-a", 3, 2, "full", False, None),
          ("two-f-grad_op", 2, 3, "grad_op", False, None), ("two-f-none", 2, 3, "none", False, None),
          ("four-hybrid", 4, 1, "hybrid", True, 2), ("four-f-hybrid", 4, 1, "hybrid", False, 2)]
for d, W, ga, s, det, g in checks:
    want = expect(W, ga, s, det, g)
    for line in open("%s/%s/metrics.jsonl" % (tmp, d)):
        j = json.loads(line)
        got = (j["comm_frozen_bytes"], j["comm_grad_bytes"], j["comm_param_bytes"])
        assert got == want, "%s step %d: logged %s, formula %s" % (d, j["step"], got, want)
    print("  %-14s W=%d ga=%d %-8s %s: frozen %d, gradients %d, parameters %d bytes per step and rank" % (d, W, ga, s, "det" if det else "fast", *want))
PY

echo "== 5. faults"
long=(--set train.threads=1 --set data.workers=1 --set train.max_steps=3000 --set train.grad_accum=1
      --set checkpoint.every_steps=50 --set checkpoint.keep=2 --set export.merged=false --set parallel.deterministic=true --quiet)
mpi 2 train configs/tiny-bert.yaml "${long[@]}" --set output_dir="$tmp/kill" > "$tmp/kill.log" 2>&1 &
job=$!
for _ in $(seq 1 600); do [ -d "$tmp/kill/checkpoints/step-100" ] && break; sleep 0.1; done
[ -d "$tmp/kill/checkpoints/step-100" ] || { cat "$tmp/kill.log"; fail "no checkpoint appeared"; }
pid=$(sed -n 's/.*(pid \([0-9]*\)).*/\1/p' "$tmp/kill/logs/rank-00001.log" | head -1)
kill -9 "$pid"
t0=$(date +%s)
rc=0
wait $job || rc=$?
dt=$(( $(date +%s) - t0 ))
[ $rc -ne 0 ] || fail "the job exited 0 after a rank was killed"
[ $dt -le 10 ] || fail "the other rank took ${dt}s to stop"
grep -Eiq "rank 1|process rank 1" "$tmp/kill.log" || { cat "$tmp/kill.log"; fail "the message does not name rank 1"; }
grep -Eiq "signal 9|killed" "$tmp/kill.log" || { cat "$tmp/kill.log"; fail "the message does not name the cause"; }
last=$(ls -d "$tmp/kill/checkpoints"/step-* | sort -t- -k2 -n | tail -1)
echo "  rank 1 killed: every rank stopped in ${dt}s (exit $rc); last checkpoint $(basename "$last")"
# The last checkpoint is whole: resuming from it (at another world size) reaches the straight run's adapter.
"$bin" train configs/tiny-bert.yaml "${long[@]}" --set train.max_steps=3000 --set train.grad_accum=2 \
  --set output_dir="$tmp/kill" --resume
"$bin" train configs/tiny-bert.yaml "${long[@]}" --set train.grad_accum=2 --set output_dir="$tmp/kill-straight"
cmp "$tmp/kill/adapter/adapter_model.safetensors" "$tmp/kill-straight/adapter/adapter_model.safetensors" \
  || fail "the resumed run differs from the straight one"
echo "  resumed from it (1 process): the straight run's adapter, bit for bit"
# A rank that hangs (SIGSTOP: alive, silent) stops every rank within parallel.collective_timeout_s, named by the
# heartbeat (parallel/mpi_watchdog.h); the last checkpoint stays whole and the run resumes from it.
mpi 2 train configs/tiny-bert.yaml "${long[@]}" --set parallel.collective_timeout_s=3 --set output_dir="$tmp/stop" \
  > "$tmp/stop.log" 2>&1 &
job=$!
for _ in $(seq 1 600); do [ -d "$tmp/stop/checkpoints/step-100" ] && break; sleep 0.1; done
[ -d "$tmp/stop/checkpoints/step-100" ] || { cat "$tmp/stop.log"; fail "no checkpoint appeared"; }
pid=$(sed -n 's/.*(pid \([0-9]*\)).*/\1/p' "$tmp/stop/logs/rank-00001.log" | head -1)
kill -STOP "$pid"
t0=$(date +%s)
rc=0
wait $job || rc=$?
dt=$(( $(date +%s) - t0 ))
# The launcher ends the stopped rank as it exits (continue, terminate, then kill after a grace period): it must
# be gone (or a zombie) within 10 s; under load that can take more than a second.
alive() { [ -e "/proc/$1" ] && ! grep -q '^[0-9]* (.*) Z' "/proc/$1/stat" 2>/dev/null; }
for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
alive "$pid" && { kill -9 "$pid" 2>/dev/null; fail "the stopped rank (pid $pid) outlived the job by 10 s"; }
[ $rc -ne 0 ] || fail "the job exited 0 after a rank was stopped"
[ $dt -le 10 ] || { cat "$tmp/stop.log"; fail "the other rank took ${dt}s to stop"; }
grep -Eq "rank 0 of 2: rank 1 \(.*, pid $pid\) has not been heard from" "$tmp/stop.log" || { cat "$tmp/stop.log"; fail "the message does not name rank 1"; }
last=$(ls -d "$tmp/stop/checkpoints"/step-* | sort -t- -k2 -n | tail -1)
echo "  rank 1 stopped (SIGSTOP): every rank stopped in ${dt}s (exit $rc): $(grep -m1 -Eo 'rank 0 of 2: rank 1 \(.*\) has not been heard from for [0-9.]* s' "$tmp/stop.log"); last checkpoint $(basename "$last")"
"$bin" train configs/tiny-bert.yaml "${long[@]}" --set train.grad_accum=2 --set output_dir="$tmp/stop" --resume
cmp "$tmp/stop/adapter/adapter_model.safetensors" "$tmp/kill-straight/adapter/adapter_model.safetensors" \
  || fail "the run resumed after the stopped rank differs from the straight one"
echo "  resumed from it (1 process): the straight run's adapter, bit for bit"
# A rank that fails (here: a pair too long for the model, read by one rank) stops every rank, naming it.
python3 - "$tmp/bad.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open("tests/fixtures/train/pairs_tiny.jsonl")]
rows[5]["text_xx"] = " ".join(["parola"] * 400)
open(sys.argv[1], "w").write("".join(json.dumps(r) + "\n" for r in rows))
PY
t0=$(date +%s)
rc=0
mpi 2 train configs/tiny-bert.yaml "${base[@]}" --set data.train="$tmp/bad.jsonl" --set output_dir="$tmp/throw" \
  > "$tmp/throw.log" 2>&1 || rc=$?
dt=$(( $(date +%s) - t0 ))
[ $rc -ne 0 ] || fail "a failing rank did not fail the job"
grep -Eq "rank [01] of 2 \(mpirun\) failed: .*more than the model" "$tmp/throw.log" || { cat "$tmp/throw.log"; fail "no message naming the rank and cause"; }
echo "  a rank that fails: job stopped in ${dt}s: $(grep -m1 -o 'rank [01] of 2 (mpirun) failed' "$tmp/throw.log")"

echo "== 6. phi3_v: the frozen base in units (CLIP groups, projector, embeddings, decoder layers)"
p3=(--set train.threads=1 --set data.workers=1 --set train.max_steps=4 --set export.merged=false --quiet)
"$bin" train configs/tiny-phi3v.yaml "${p3[@]}" "${det[@]}" --set train.grad_accum=6 --set output_dir="$tmp/p3-one"
mpi 2 train configs/tiny-phi3v.yaml "${p3[@]}" "${det[@]}" --set train.grad_accum=3 \
  --set parallel.vision_layers_per_unit=1 --set output_dir="$tmp/p3-two"
compare "$tmp/p3-one" "$tmp/p3-two" 0 || fail "phi3_v: 2 ranks differ from 1 process"
mpi 3 train configs/tiny-phi3v.yaml "${p3[@]}" "${det[@]}" --set train.grad_accum=2 --set output_dir="$tmp/p3-three"
compare "$tmp/p3-one" "$tmp/p3-three" 0 || fail "phi3_v: 3 ranks differ from 1 process"
echo "  2 ranks (one CLIP layer per unit) and 3 ranks (one group): bit-identical to 1 process"
"$bin" train configs/tiny-phi3v.yaml "${p3[@]}" --set train.grad_accum=6 --set output_dir="$tmp/p3-one-f"
mpi 2 train configs/tiny-phi3v.yaml "${p3[@]}" --set train.grad_accum=3 --set output_dir="$tmp/p3-two-f"
compare "$tmp/p3-one-f" "$tmp/p3-two-f" 1e-4 || fail "phi3_v: 2 ranks are not within 1e-4 of 1 process"
python3 - "$tmp" tests/fixtures/models/tiny_phi3v/config.json <<'PY'
import json, sys
tmp, cfgp = sys.argv[1], sys.argv[2]
c = json.load(open(cfgp))
V, C, I, L = c["vocab_size"], c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
D = C // c["num_attention_heads"]; Hq, Hkv = c["num_attention_heads"], c["num_key_value_heads"]
v = c["img_processor"]["vision_config"]
Cv, Iv, P, S = v["hidden_size"], v["intermediate_size"], v["patch_size"], v["image_size"]
Lv = v["num_hidden_layers"] - 1  # hidden state -2: the last layer does not run
clip_layer = 4 * (Cv * Cv + Cv) + 4 * Cv + (Iv * Cv + Iv) + (Cv * Iv + Cv)
clip_emb = 3 * P * P * Cv + Cv + ((S // P) ** 2 + 1) * Cv + 2 * Cv
proj = 2 * 4 * Cv + (4 * Cv * C + C) + (C * C + C)
layer = 2 * C + (Hq + 2 * Hkv) * D * C + C * Hq * D + 2 * I * C + C * I
def ceil(a, b): return -(-a // b)
def frozen(W, ga, per_unit):
    # The corpus has images and the tower has adapters: every micro-batch, with images of its own or not,
    # gathers the CLIP groups and the projector in forward and again in backward (the ranks must gather the same
    # units); the embeddings once; the decoder layers in forward, all but the last (which holds model.norm too)
    # again in backward.
    groups = [min(per_unit, Lv - g) * clip_layer + (clip_emb if g == 0 else 0) for g in range(0, Lv, per_unit)]
    sh = lambda u: ceil(u, W)
    per_mb = 2 * sum(sh(u) for u in groups) + 2 * sh(proj) + sh(V * C) + (L - 1) * sh(layer) + sh(layer + C) \
        + (L - 1) * sh(layer)
    return ga * 4 * (W - 1) * per_mb
for d, W, ga, per_unit in (("p3-two", 2, 3, 1), ("p3-three", 3, 2, 8), ("p3-two-f", 2, 3, 8)):
    want = frozen(W, ga, per_unit)
    for line in open("%s/%s/metrics.jsonl" % (tmp, d)):
        j = json.loads(line)
        assert j["comm_frozen_bytes"] == want, "%s step %d: logged %d, formula %d" % (d, j["step"], j["comm_frozen_bytes"], want)
    print("  %-9s W=%d ga=%d, %d CLIP layer(s) per unit: %d frozen bytes per step and rank, as the formula" % (d, W, ga, per_unit, want))
PY
echo "  default reduction, 2 ranks: within 1e-4 of 1 process"

echo "mpi_train_test: all passed"

echo "== 7. model.weight_dtype bf16: 2 ranks x 3 = 1 process x 6, half the frozen bytes"
bf=(--set model.weight_dtype=bf16)
"$bin" train configs/tiny-bert.yaml "${base[@]}" "${det[@]}" "${bf[@]}" --set train.grad_accum=6 --set output_dir="$tmp/one-bf16"
mpi 2 train configs/tiny-bert.yaml "${base[@]}" "${det[@]}" "${bf[@]}" --set train.grad_accum=3 --set output_dir="$tmp/two-bf16"
compare "$tmp/one-bf16" "$tmp/two-bf16" 0 || fail "2 ranks (bf16 base) differ from 1 process"
python3 - "$tmp/two-full" "$tmp/two-bf16" <<'PY' || fail "the bf16 base does not halve the frozen bytes"
import json, sys
def last(d): return [json.loads(l) for l in open(d + "/metrics.jsonl")][-1]
f32, bf16 = last(sys.argv[1]), last(sys.argv[2])
assert bf16["comm_frozen_bytes"] * 2 == f32["comm_frozen_bytes"], (f32["comm_frozen_bytes"], bf16["comm_frozen_bytes"])
assert abs(bf16["frozen_resident_mb"] * 2 - f32["frozen_resident_mb"]) < 1e-3, (f32["frozen_resident_mb"], bf16["frozen_resident_mb"])
print("  frozen bytes per step %d (f32 %d); held %.3f MB (f32 %.3f MB)" % (bf16["comm_frozen_bytes"], f32["comm_frozen_bytes"], bf16["frozen_resident_mb"], f32["frozen_resident_mb"]))
PY
echo "  bit-identical, half the frozen bytes"
