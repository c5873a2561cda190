# Two commands do all the set-up: `make repro` and `make test` (both go through `make setup`).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# This machine keeps the CPU build of torch on local disk; elsewhere pip takes it from the index.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
PIP := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: setup repro test test-fast bench system-deps clean-venv

# Offline `dvc plots show`: plots/offline_template.html, the vega bundle of vl-convert-python (the venv's) inlined.
PLOTS_PY := $(BIN)/python
PLOTS_DEPS := $(STAMP)
include plots/plots.mk

setup: $(STAMP)

# Idempotent: reinstalls only when pyproject.toml or constraints.txt change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -q $(FIND_LINKS) -c constraints.txt -e ".[remote,dev]"
	touch $@

# The stages call `python`: the project's venv comes first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

repro: setup plots-setup
	$(BIN)/dvc repro

# Debian packages the test suite's real servers and browser need (sshd, Swift+S3, memcached, chromium).
system-deps:
	bash .ci/system-deps.sh

# Two workers, one test file each at a time (module fixtures stay in one process): most of the suite waits on
# subprocesses (dvc, servers, a browser), so two files side by side finish sooner even on 2 cores.
test: setup system-deps plots-setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

# No Debian servers, no browser, no end-to-end `dvc repro`: a few minutes on a bare machine with Python alone.
test-fast: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow and not servers and not browser" tests

bench: setup
	$(BIN)/python bench/speed.py

clean-venv:
	rm -rf $(VENV)
