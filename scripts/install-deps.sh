#!/usr/bin/env bash
# Installs the Debian packages xvlm2vec builds against. Idempotent: installs only what is missing.
set -euo pipefail
pkgs=(build-essential cmake pkg-config python3 python3-venv
      libopenmpi-dev openmpi-bin libhdf5-dev libyaml-cpp-dev nlohmann-json3-dev libopenblas-openmp-dev
      libcli11-dev libspdlog-dev libfmt-dev libpng-dev libjpeg-dev
      libgtest-dev libgmock-dev libbenchmark-dev libutf8proc-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#pkgs[@]} Debian packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
