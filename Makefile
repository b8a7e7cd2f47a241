# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench peers venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Real SIP peers for the integration tests (Debian packages). Installed when missing and we
# are root; without root the peer tests are skipped with the reason (a failure under CI=true).
peers:
	@if command -v sipp >/dev/null && command -v baresip >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends sip-tester baresip-core; \
	else echo "sipp/baresip missing and not root: peer tests will be skipped"; fi

demo: $(STAMP)
	$(BIN)/bridge demo

test: $(STAMP) peers
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check bridge tests bench
	$(BIN)/ruff format --check bridge tests bench
	$(BIN)/mypy

# The call benchmark compares against Kamailio (Debian package) as a stateful proxy.
bench: $(STAMP) peers
	@command -v kamailio >/dev/null || { [ "$$(id -u)" = 0 ] && \
	  apt-get install -y -qq --no-install-recommends kamailio; } || \
	  echo "kamailio missing and not root: the Kamailio comparison is skipped"
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) build *.egg-info
