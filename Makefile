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
	@# AutoAttack and the PGD cross-check (stress.evaluate.probe_shards, tests/unit/perturb): torchattacks' metadata pins requests~=2.25.1,
	@# which Ray's and selenium's dependencies rule out; it never imports requests, so it goes in without its
	@# dependencies (scipy, tqdm and numpy are already there).
	@$(VENV)/bin/pip install --quiet --no-deps torchattacks==3.5.1 >> $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@touch $@

.PHONY: setup run test unit
setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/stress run $(ARGS)

# make test: every test, in two passes. The in-process tests run on every core (pytest-xdist, a test file
# per worker); then the end-to-end and browser tests, two test files at a time (E2E_WORKERS): each starts
# its own Ray instances or jobs (own ports and temp dirs) and spends a third of its time waiting on Ray
# start-up and polls, which a second file fills. PYTEST_ARGS goes to both passes.
# Both passes always run; the exit status is the first failure's, or pytest's 5 ("no tests collected") only
# when neither pass collected a test (PYTEST_ARGS naming one file leaves the other pass empty).
TEST_WORKERS ?= auto
E2E_WORKERS ?= 2
test: setup
	@first=0; second=0; \
	echo "in-process tests, on $(TEST_WORKERS) worker(s):"; \
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not e2e and not browser" $(PYTEST_ARGS) || first=$$?; \
	echo "end-to-end and browser tests, on $(E2E_WORKERS) worker(s):"; \
	$(VENV)/bin/python -m pytest -q -n $(E2E_WORKERS) --dist loadfile -m "e2e or browser" $(PYTEST_ARGS) || second=$$?; \
	for status in $$first $$second; do [ $$status -eq 0 ] || [ $$status -eq 5 ] || exit $$status; done; \
	[ $$first -eq 5 ] && [ $$second -eq 5 ] && exit 5; exit 0

# make unit: the fast layer, for the edit-test loop: no end-to-end, browser or slow tests (about a minute).
unit: setup
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not e2e and not browser and not slow" $(PYTEST_ARGS)
