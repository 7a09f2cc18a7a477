#!/bin/sh
# The benchmark entry point (`make bench` calls this): builds the C load
# generator and ceiling server into bench/bin/, generates the corpus, runs
# ceiling, postfwd1, postfwd2 and postgate side by side, and writes
# bench/out/results.{json,md} and bench/out/throughput.png.
# Arguments go to bench/driver.py, e.g. --quick, --publish, --servers postgate.
# matplotlib is needed for the plot only; it is installed into the venv here
# and is not a runtime dependency of postgate.
set -eu
cd "$(dirname "$0")/.."
PY=.venv/bin/python
"$PY" -c 'import matplotlib' 2>/dev/null || .venv/bin/pip install -q matplotlib
exec "$PY" bench/driver.py "$@"
