# Two commands for a fresh clone:
#   make run ARGS="--data ../shared/data/cifar10/cifar10.npz"   set up, then run the main job locally
#   make test                                                    set up, then run the test suite
PYTHON ?= python3.11
VENV ?= .venv
ARGS ?=

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[test]"
	touch $@

.PHONY: setup run test sweep report
setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/python jobs/stress_test.py $(ARGS)

test: setup
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)
