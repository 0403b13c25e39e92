#!/usr/bin/env bash
# Regenerates the compiled fixtures of tests/test_corpus_build.cpp from their sources, with GNU msgfmt:
#   tests/fixtures/corpus_build/po/NAME.LANG.po  ->  locale/LANG/LC_MESSAGES/NAME.mo
#   alpha.it.po, big-endian                      ->  alpha.it.be.mo
#   a truncated catalog                          ->  locale/es/LC_MESSAGES/broken.mo
#   a truncated PNG                              ->  xmmeb/images/corrupt.png
# The outputs are committed, so the tests need no gettext tools.
#   bash tools/make_corpus_fixtures.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
fix=$root/tests/fixtures/corpus_build
command -v msgfmt >/dev/null || { echo "make_corpus_fixtures: msgfmt not found (Debian package gettext)" >&2; exit 1; }
rm -rf "$fix/locale"
for po in "$fix"/po/*.po; do
  base=$(basename "$po" .po)  # NAME.LANG
  name=${base%.*}
  lang=${base##*.}
  mkdir -p "$fix/locale/$lang/LC_MESSAGES"
  msgfmt --endianness=little -o "$fix/locale/$lang/LC_MESSAGES/$name.mo" "$po"
done
msgfmt --endianness=big -o "$fix/alpha.it.be.mo" "$fix/po/alpha.it.po"
mkdir -p "$fix/locale/es/LC_MESSAGES"
head -c 100 "$fix/locale/it/LC_MESSAGES/alpha.mo" >"$fix/locale/es/LC_MESSAGES/broken.mo"
mkdir -p "$fix/xmmeb/images"
cp "$root/tests/fixtures/images/tiny_50x30.png" "$fix/xmmeb/images/a.png"
cp "$root/tests/fixtures/images/gray_75x53.jpg" "$fix/xmmeb/images/b.jpg"
head -c 200 "$root/tests/fixtures/images/palette_100x80.png" >"$fix/xmmeb/images/corrupt.png"
echo "corpus build fixtures regenerated under $fix"
