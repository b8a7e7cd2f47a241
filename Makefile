# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench peers venv native clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The call core and the relay's packet path compiled with mypyc into build/native (see
# bridge/native.py), rebuilt when a compiled module changes. Without a C compiler the same
# modules run as Python: a failed build costs speed, not function, and says so.
NATIVE := build/native/manifest.json
$(NATIVE): $(STAMP) bridge/native.py $(shell find bridge/sip bridge/calls bridge/media -name '*.py')
	@mkdir -p build
	@echo "compiling the call core with mypyc (about 2 minutes; log in build/native.log)"
	@BRIDGE_PURE=1 $(BIN)/python -m bridge.native > build/native.log 2>&1 || \
	  echo "native build failed (build/native.log): the call core runs as Python"

native: $(NATIVE)

# Real peers for the integration tests (Debian packages): SIP phones, and a PostgreSQL server
# for the PostgreSQL ticket store (Debian keeps initdb off PATH, in /usr/lib/postgresql/*/bin).
# Installed when missing and we are root; without root the peer tests are skipped with the
# reason (a failure under CI=true).
HAVE_INITDB = ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null
peers:
	@if command -v sipp >/dev/null && command -v baresip >/dev/null && { $(HAVE_INITDB); }; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends \
	    sip-tester baresip-core postgresql; \
	else echo "sipp/baresip/postgresql missing and not root: peer tests will be skipped"; fi

demo: $(STAMP) $(NATIVE)
	$(BIN)/bridge demo

# The whole suite on the compiled core, then the pure-logic tests again as Python: the core
# must behave the same without a C compiler.
test: $(STAMP) peers $(NATIVE)
	$(BIN)/python -m pytest -q
	BRIDGE_PURE=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

lint: $(STAMP)
	$(BIN)/ruff check bridge tests bench
	$(BIN)/ruff format --check bridge tests bench
	$(BIN)/mypy

# The call benchmark compares against Kamailio (Debian package) as a stateful proxy.
bench: $(STAMP) peers $(NATIVE)
	@command -v kamailio >/dev/null || { [ "$$(id -u)" = 0 ] && \
	  apt-get install -y -qq --no-install-recommends kamailio; } || \
	  echo "kamailio missing and not root: the Kamailio comparison is skipped"
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) build *.egg-info
