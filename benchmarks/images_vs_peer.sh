#!/usr/bin/env bash
# Image-embedding throughput side by side: the same images through xvlm2vec's tower path (decode, CLIP
# preprocessing, the tower; bench_image_embed --mode tower) and through the Hugging Face CLIP image processor +
# a PyTorch forward of the same tower (benchmarks/peers/clip_tower_torch.py), with the agreement of the two
# outputs; then xvlm2vec's whole phi3_v image path as `eval run` uses it (HD crops, tower, projector, decoder),
# which the peer has no counterpart of.
#   benchmarks/images_vs_peer.sh [LIST.txt]
# Without a list: N images (default 240) taken evenly from the prepared multimodal data
# (scripts/install-multimodal-data.sh; emoji, flags, stamps, map crops, easy-vqa), else the test fixtures' PNGs.
# Environment: MODEL (default tests/fixtures/models/tiny_phi3v), THREADS (2), N, REPEAT (3), PYTHON (the
# tools venv that tools/make_fixtures.sh makes, build/tools-venv).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build
py=${PYTHON:-$build/tools-venv/bin/python}
model=${MODEL:-$root/tests/fixtures/models/tiny_phi3v}
threads=${THREADS:-2}
n=${N:-240}
repeat=${REPEAT:-3}
bench=$build/benchmarks/bench_image_embed
[ -x "$bench" ] || { echo "images_vs_peer: build first (scripts/build.sh): $bench is missing" >&2; exit 1; }
[ -x "$py" ] || { echo "images_vs_peer: no Python with torch and transformers at $py (tools/make_fixtures.sh makes it, or set PYTHON)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
list=${1:-}
if [ -z "$list" ]; then
  list=$tmp/images.txt
  mmdata=$build/multimodal-data
  if [ -f "$mmdata/prepared.json" ]; then
    find "$mmdata" -path "$mmdata/.venv" -prune -o -name '*.png' -print | LC_ALL=C sort > "$tmp/all.txt"
    total=$(wc -l < "$tmp/all.txt")
    awk -v n="$n" -v t="$total" 'BEGIN { s = t / n } { if (NR - 1 >= k * s && k < n) { print; k++ } }' "$tmp/all.txt" > "$list"
    echo "images_vs_peer: $(wc -l < "$list") of $total prepared images ($mmdata)"
  else
    ls "$root"/tests/fixtures/images/*.png > "$list"
    echo "images_vs_peer: the $(wc -l < "$list") fixture PNGs (no prepared multimodal data)"
  fi
fi
echo "images_vs_peer: model $model, $threads threads, $repeat passes"
ours=$("$bench" "$model" "$list" --mode tower --threads "$threads" --repeat "$repeat" --dump "$tmp/ours.npy")
peer=$("$py" "$root/benchmarks/peers/clip_tower_torch.py" "$model" "$list" --threads "$threads" --repeat "$repeat")
peer_pil=$("$py" "$root/benchmarks/peers/clip_tower_torch.py" "$model" "$list" --backend pil --threads "$threads" \
           --repeat "$repeat" --dump "$tmp/peer.npy")
full=$("$bench" "$model" "$list" --mode full --threads "$threads" --repeat 1)
"$py" - "$tmp/ours.npy" "$tmp/peer.npy" "$ours" "$peer" "$peer_pil" "$full" <<'EOF'
import json, sys
import numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
o, p, pp, f = (json.loads(x) for x in sys.argv[3:7])
diff = float(np.abs(a - b).max()) if a.shape == b.shape else float("nan")
print(f"first batch {a.shape}: max |xvlm2vec - transformers (PIL backend)| = {diff:.3g} "
      f"(max |value| {float(np.abs(b).max()):.3g})")
print()
print("| path | images | xvlm2vec images/s | transformers images/s | ratio | peak RSS xvlm2vec / transformers |")
print("|---|---|---|---|---|---|")
for peer in (p, pp):
    print(f"| decode + CLIP preprocessing + tower (transformers {peer['processor']}) | {o['images']} | "
          f"{o['images_per_s']:.1f} | {peer['images_per_s']:.1f} | **{o['images_per_s'] / peer['images_per_s']:.2f}x** | "
          f"{o['peak_rss_mb']:.0f} / {peer['peak_rss_mb']:.0f} MB |")
print(f"| phi3_v image path of eval (HD crops + tower + projector + decoder) | {f['images']} | "
      f"{f['images_per_s']:.1f} | - | - | {f['peak_rss_mb']:.0f} MB / - |")
if not diff <= 1e-3:
    sys.exit(f"images_vs_peer: the outputs disagree (max abs difference {diff})")
EOF
