# Two commands: `make repro` runs the study, `make test` runs the test suite.
# Each sets itself up: creates .venv when missing and installs the pinned dependencies.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kmx-installed
export HF_DATASETS_OFFLINE ?= 1
export DVC_NO_ANALYTICS := 1
export PYTHONHASHSEED := 0
# dvc.yaml's commands call `python`: the one in .venv, where kmx_eval is installed.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: repro test setup chromium bench clean-outputs help

help:
	@echo "make repro  - set up .venv and run the whole pipeline (dvc repro); prints where the report is"
	@echo "make test   - set up .venv and run the test suite (includes an end-to-end dvc repro)"
	@echo "make bench  - run the benchmark scripts in benchmarks/"

setup: $(STAMP)

# Reinstall when the pins change. pip (not uv/poetry) so that torch comes from the local wheel cache
# where one exists; requirements.lock pins every transitive package to the versions tested.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	@touch $(STAMP)

repro: $(STAMP)
	$(BIN)/dvc repro
	@echo
	@echo "Report: $(CURDIR)/reports/index.html"
	@echo "Tables: $(CURDIR)/reports/tables/   Figures: $(CURDIR)/reports/figures/"

# The report test drives a real headless Chromium; install Debian's package where it is missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the report test (apt-get)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "chromium could not be installed; the browser test will be skipped"; \
	  else echo "chromium missing and not root; the browser test will be skipped"; fi; }

# Two workers, one per core of the reference machine: the end-to-end studies run their DVC stages on
# one thread each, so a second worker uses the core a serial run leaves idle. A test module stays on
# one worker (--dist loadfile): its module-scoped pipeline run is built once.
TEST_WORKERS ?= 2
test: $(STAMP) chromium
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: $(STAMP)
	for script in benchmarks/bench_*.py; do $(BIN)/python $$script || exit 1; done

clean-outputs:
	rm -rf data models features heads maps metrics reports/index.html reports/tables reports/figures
