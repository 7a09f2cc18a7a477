#!/bin/sh
# Build a virtualenv running another revision of postgate, to measure it beside
# this one in one run: sh bench/baseline.sh REV, then
#   sh bench/run.sh --servers postgate,postgate-baseline --baseline bench/out/baseline/venv
# The revision is checked out (detached) in bench/out/baseline/tree and
# installed on the system python3, like run.sh installs postgate.
set -eu
cd "$(dirname "$0")/.."
rev=${1:?usage: bench/baseline.sh REV}
dir=bench/out/baseline
rm -rf "$dir"
git worktree prune
mkdir -p bench/out
git worktree add --detach "$dir/tree" "$rev" >/dev/null
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
"$PY" -m venv "$dir/venv"
"$dir/venv/bin/python" -m pip install -q -e "$dir/tree"
echo "$dir/venv: postgate at $(git rev-parse --short "$rev")"
