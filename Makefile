# sentinel — every set-up step lives here, so a fresh machine needs only `make demo` / `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1

.PHONY: install demo demo-replay test test-fast lint bench replay-data clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The demo: replay the week of sample traffic through every detector and print the alerts.
demo: install
	bash scripts/demo.sh

demo-replay: install
	$(VENV)/bin/sentinel replay --rules rules --out .run/demo-alerts.jsonl --dead-letter .run/demo-dead-letter.jsonl \
		replay_data/sample.jsonl.gz
	$(VENV)/bin/sentinel alerts .run/demo-alerts.jsonl

# Lint + the whole suite against real services (broker, Redis, rsyslog) that the script starts and stops.
test: install
	bash scripts/test.sh

test-fast: install
	$(PY) -m pytest -q -m "not kafka and not redis and not syslog and not browser"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/bench.py

replay-data: install
	$(PY) replay_data/generate.py
	$(PY) replay_data/generate.py scenarios

clean:
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache
