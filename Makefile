# robolearn: every target sets itself up (a pinned .venv from uv.lock) on a fresh clone.
#   make quickstart   the main job on the simulated default
#   make test         the test suite (what CI runs)
#   make bench        the benchmarks in bench/, printing ratios against their baselines
#   make firmware     the RC car's firmware (gcc-avr), its simavr board and its fuzzer
SHELL := /bin/bash
VENV := .venv
.PHONY: setup quickstart test bench lint clean firmware

# System packages (apt-get as root, else the one command to run), uv, Python 3.12 and the locked
# .venv: tools/setup.sh does each only when it is missing or out of date.
setup:
	@bash tools/setup.sh

quickstart: setup
	$(VENV)/bin/robolearn quickstart

test: setup
	$(VENV)/bin/python -m pytest -q

bench: setup
	$(VENV)/bin/python -m bench

firmware: setup
	$(MAKE) -C hardware/rc_car all fuzz

lint: setup
	$(VENV)/bin/ruff check robolearn_core robolearn data sim hardware policies tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) outputs
