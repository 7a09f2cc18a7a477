# The single entry point: `make run`, `make test`, `make lint`, `make bench`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= conf/postgate.toml
# apt-get is used only when running as root and a system package is missing.
# Redis joins this list with the first test that needs shared state.

.PHONY: run test lint unit bench bench-memory stress check clean system-deps

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The daemon needs only the runtime dependencies; tests and lint need the dev group.
$(VENV)/.installed-run: pyproject.toml $(BIN)/activate
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed: pyproject.toml $(BIN)/activate
	$(BIN)/python -m pip install -q -e . --group dev
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/postgate run -c $(CONFIG)

check: $(VENV)/.installed-run
	$(BIN)/postgate check -c $(CONFIG)

# Side-by-side benchmark (bench/run.sh): ceiling, postfwd and postgate.
# BENCH_ARGS=--quick for a short run.
bench: $(VENV)/.installed
	@command -v postfwd1 >/dev/null 2>&1 || [ -x /usr/sbin/postfwd1 ] || { \
	  [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfwd >/dev/null; }
	sh bench/run.sh $(BENCH_ARGS)

# Resident memory with 100,000-entry lists over 5 million requests (~13 min).
bench-memory: $(VENV)/.installed
	$(BIN)/python bench/memory.py $(BENCH_ARGS)

# The long reliability runs (bench/stress.py): a 1-hour soak, floods, peers that
# do not read, a stalled log consumer and a stalled recording writer (~65 min).
# STRESS_ARGS="--minutes 2 --seconds 20" for a trial; --publish updates docs/reliability.md.
stress: $(VENV)/.installed
	$(BIN)/python bench/stress.py $(STRESS_ARGS)

system-deps:
	@missing=""; \
	command -v postfix >/dev/null 2>&1 || [ -x /usr/sbin/postfix ] || missing="$$missing postfix"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	command -v strace >/dev/null 2>&1 || missing="$$missing strace"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && \
	    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing system packages:$$missing (not root: not installing)"; \
	  fi; \
	fi

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

unit: $(VENV)/.installed
	$(BIN)/pytest tests/unit

test: $(VENV)/.installed system-deps
	$(MAKE) lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache
