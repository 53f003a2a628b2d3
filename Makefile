# robolearn: every target sets itself up (a pinned .venv from uv.lock) on a fresh clone.
#   make quickstart   the main job on the simulated default
#   make test         the test suite (what CI runs)
#   make bench        the benchmarks in bench/, printing ratios against their baselines
SHELL := /bin/bash
VENV := .venv
STAMP := $(VENV)/.synced
# Python 3.12 (zarr 3 and lerobot >= 0.5 need it): first one that runs, pyenv's included.
PYTHON312 ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12; do \
	  $$p -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { command -v $$p || echo $$p; } && break; done)
UV := $(shell command -v uv 2>/dev/null || echo $$HOME/.local/bin/uv)

.PHONY: setup quickstart test bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml uv.lock
	@test -n "$(PYTHON312)" || { echo "robolearn needs Python 3.12 (python3.12 on PATH or under ~/.pyenv)"; exit 1; }
	@test -x "$(UV)" || python3 -m pip install --quiet --user 'uv>=0.5,<1'
	$(UV) sync --frozen --all-extras --python "$(PYTHON312)"
	@touch $@

quickstart: setup
	$(VENV)/bin/robolearn quickstart

test: setup
	$(VENV)/bin/python -m pytest -q

bench: setup
	$(VENV)/bin/python -m bench

lint: setup
	$(VENV)/bin/ruff check robolearn data sim hardware policies tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) outputs
