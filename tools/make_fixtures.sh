#!/usr/bin/env bash
# Regenerates every golden fixture under tests/fixtures from the reference implementations.
# Creates a virtual environment in build/tools-venv with the pinned packages of tools/requirements.txt,
# prepares the real all-MiniLM-L6-v2, then runs each tools/make_*_fixtures.py in dependency order.
#   bash tools/make_fixtures.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${XV_BUILD_DIR:-$root/build}
venv=$build/tools-venv
mkdir -p "$build"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$root/tools/requirements.txt"
minilm=$build/models/all-MiniLM-L6-v2
bash "$root/scripts/prepare-minilm.sh" "$minilm" "$build/venv"
export HF_HUB_OFFLINE=1 PYTHONHASHSEED=0
"$venv/bin/python" "$root/tools/make_tokenizer_fixtures.py" "$minilm"
"$venv/bin/python" "$root/tools/make_image_fixtures.py"
"$venv/bin/python" "$root/tools/make_model_fixtures.py" "$minilm"
"$venv/bin/python" "$root/tools/make_train_fixtures.py"
"$venv/bin/python" "$root/tools/make_peft_fixtures.py"
"$venv/bin/python" "$root/tools/make_eval_fixtures.py"
"$venv/bin/python" "$root/tools/make_train_phi3v_fixtures.py"
echo "fixtures regenerated under tests/fixtures"
