#!/usr/bin/env bash
# Installs the data of the offline multimodal suite and prepares it for `xvlm2vec eval make-multimodal`.
#   scripts/install-multimodal-data.sh [DIR]        (default: build/multimodal-data)
# Debian 12 packages (installed when missing): Noto Color Emoji, the Unicode CLDR, the ISO flags and codes,
# the Tux Paint stamps, the KGeography maps, librsvg (for the SVG-only stamps); from PyPI, into DIR/.venv:
# Pillow, NumPy and easy-vqa. tools/prepare_multimodal.py then writes DIR/prepared.json, one JSONL of items per
# source and the images (about 100 MB, a minute). Nothing of it belongs in the repository. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build/multimodal-data}
pkgs=(fonts-noto-color-emoji unicode-cldr-core iso-flags-png-320x240 iso-codes tuxpaint-stamps-default
      kgeography-data librsvg2-bin python3-venv)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  echo "install-multimodal-data: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
mkdir -p "$dir"
if ! "$dir/.venv/bin/python" -c "import PIL, numpy, easy_vqa" 2>/dev/null; then
  echo "install-multimodal-data: Pillow, NumPy and easy-vqa from PyPI into $dir/.venv"
  python3 -m venv "$dir/.venv"
  "$dir/.venv/bin/pip" install -q pillow==13.0.0 numpy==2.4.6 easy-vqa==1.0
fi
echo "install-multimodal-data: preparing the sources into $dir (about a minute)"
"$dir/.venv/bin/python" tools/prepare_multimodal.py --out "$dir"
echo "install-multimodal-data: done. Build the suite with"
echo "  build/launch/xvlm2vec eval make-multimodal --data $dir --out build/mmmeb-offline"
