#!/bin/sh
# The benchmark entry point (`make bench` calls this): builds the C load
# generator and ceiling server into bench/bin/, generates the corpus, runs
# ceiling, postfwd1, postfwd2 and postgate side by side, and writes
# bench/out/results.{json,md} and bench/out/throughput.png.
# Arguments go to bench/driver.py, e.g. --quick, --publish, --servers postgate.
# matplotlib is needed for the plot only; it is installed into the venv here
# and is not a runtime dependency of postgate.
#
# postgate runs from a virtualenv on the system's /usr/bin/python3, the
# interpreter docs/install.md deploys on (Debian's is built with PGO and LTO);
# `postgate-venv` runs the same code from the repository's .venv, whatever
# python made it, so a slower build there shows as a row of its own.
set -eu
cd "$(dirname "$0")/.."
PY=.venv/bin/python
"$PY" -c 'import matplotlib' 2>/dev/null || .venv/bin/pip install -q matplotlib
VENV=.venv
SYSTEM=/usr/bin/python3
if [ -x "$SYSTEM" ]; then
  VENV=bench/out/venv-system
  if [ ! -x "$VENV/bin/postgate" ] || [ pyproject.toml -nt "$VENV/bin/postgate" ]; then
    { "$SYSTEM" -m venv "$VENV" && "$VENV/bin/python" -m pip install -q -e .; } ||
      { echo "run.sh: no virtualenv on $SYSTEM (apt-get install python3-venv); using .venv"; VENV=.venv; }
  fi
fi
exec "$PY" bench/driver.py --venv "$VENV" "$@"
