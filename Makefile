# Two commands for a fresh clone:
#   make run                                                     set up, then run the main job locally (downloads CIFAR-10)
#   make test                                                    set up, then run the test suite
PYTHON ?= python3.11
VENV ?= .venv
ARGS ?=

# pip's output goes to $(VENV)/pip.log and is shown only when a step fails.
$(VENV)/.installed: pyproject.toml
	@echo "setting up $(VENV) (torch, torchvision, ray; a few minutes the first time; log: $(VENV)/pip.log)"
	@$(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install --quiet --upgrade pip > $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@$(VENV)/bin/pip install --quiet -e ".[test]" >> $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@# AutoAttack and the PGD cross-check (stress.evaluate.attacks): torchattacks' metadata pins requests~=2.25.1,
	@# which Ray's and selenium's dependencies rule out; it never imports requests, so it goes in without its
	@# dependencies (scipy, tqdm and numpy are already there).
	@$(VENV)/bin/pip install --quiet --no-deps torchattacks==3.5.1 >> $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@touch $@

.PHONY: setup run test sweep report
setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/stress run $(ARGS)

test: setup
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)
