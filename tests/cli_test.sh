#!/usr/bin/env bash
# End-to-end CLI checks: exit codes and messages. Filled in with the embed command.
set -u
bin=$1
"$bin" --help >/dev/null || { echo "FAIL: --help"; exit 1; }
echo "cli: ok"
