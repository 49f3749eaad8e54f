# Two commands do all set-up on a fresh Debian machine:
#   make demo   - builds the environment, runs egs/mini/v1/run.sh end to end
#   make test   - builds the environment, runs the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := tools/venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BIN_MODULES := $(wildcard fhvae/bin/*.py)
PYTEST_ARGS ?=

.PHONY: all env debian test test-fast demo bench clean-demo

all: test

$(STAMP): tools/requirements.txt setup.py $(BIN_MODULES)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r tools/requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

env: $(STAMP) debian

debian:
	@bash tools/install_debian.sh

test: env
	$(PY) -m pytest -q -ra $(PYTEST_ARGS) tests

test-fast: env
	$(PY) -m pytest -q -ra -m "not slow" tests

demo: env
	cd egs/mini/v1 && ./run.sh

bench: env
	$(VENV)/bin/fhvae-bench all --quick

clean-demo:
	rm -rf egs/mini/v1/{data,exp,fbank,corpus}
