#!/usr/bin/env bash
# Prepares a virtual environment with h5py and numpy, the reference HDF5 binding the corpus interoperability
# test (tests/test_corpus_file.cpp, tools/h5py_corpus.py) checks our reader and writer against.
#   usage: prepare-h5py.sh VENV_DIR
# Idempotent: an environment that already imports both is left as it is. Exits non-zero with a message when
# the environment cannot be made or pip cannot install the packages.
set -euo pipefail
venv=${1:?usage: prepare-h5py.sh VENV_DIR}
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import h5py, numpy' 2>/dev/null; then
  echo "prepare-h5py: $venv is ready"
  exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" || { echo "prepare-h5py: cannot create a virtual environment at $venv (python3-venv missing?)" >&2; exit 1; }
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check h5py==3.16.0 numpy==2.4.6 ||
  { echo "prepare-h5py: pip could not install h5py and numpy into $venv" >&2; exit 1; }
"$venv/bin/python" -c 'import h5py, numpy' ||
  { echo "prepare-h5py: h5py or numpy installed but does not import in $venv" >&2; exit 1; }
echo "prepare-h5py: h5py $("$venv/bin/python" -c 'import h5py; print(h5py.__version__)') ready in $venv"
