#!/usr/bin/env bash
# Fetches the Debian package description translations (DDTP: apt's i18n/Translation-<lang> indexes of the
# machine's Debian release, main component) into DIR as plain text, for `xvlm2vec corpus build --from ddtp`.
#   scripts/install-ddtp.sh [DIR] [LANGS]        (defaults: build/ddtp, "it es fr de")
# apt fetches them into a private lists folder (DIR/lists), so the system's apt state is left as it is; apt's
# own helper decompresses them. About 25 MB; needs the network to the Debian mirror and root (or sudo) for apt.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build/ddtp}
langs=${2:-it es fr de}
mkdir -p "$dir/lists/partial"
conf=$dir/apt.conf
{
  echo '#clear Acquire::Languages;'
  printf 'Acquire::Languages { "en";'
  for l in $langs; do printf ' "%s";' "$l"; done
  echo ' };'
} > "$conf"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-ddtp: apt-get update of the Translation indexes (en $langs) into $dir/lists"
$SUDO apt-get update -q -c "$conf" -o Dir::State::Lists="$(cd "$dir/lists" && pwd)" >/dev/null
for l in en $langs; do
  src=$(find "$dir/lists" -maxdepth 1 -name "*_dists_*_main_i18n_Translation-$l*" ! -name "*-updates_*" \
        ! -name "*security*" | head -1)
  [ -n "$src" ] || { echo "install-ddtp: the mirror has no Translation-$l index for this release" >&2; exit 1; }
  /usr/lib/apt/apt-helper cat-file "$src" > "$dir/Translation-$l.tmp"
  mv "$dir/Translation-$l.tmp" "$dir/Translation-$l"
  echo "install-ddtp: $dir/Translation-$l: $(grep -c '^Package:' "$dir/Translation-$l") descriptions (from $(basename "$src"))"
done
inputs=""
for l in en $langs; do inputs="$inputs --input $dir/Translation-$l"; done
echo "install-ddtp: done. Build a corpus with"
echo "  build/launch/xvlm2vec corpus build --from ddtp --out build/ddtp.h5$inputs"
