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

.PHONY: repro digests test test-slurm setup chromium bench results clean-outputs help

help:
	@echo "make repro  - set up .venv and run the whole pipeline (dvc repro); prints where the report is"
	@echo "make test   - set up .venv and run the test suite (includes an end-to-end dvc repro)"
	@echo "make test-slurm - start a one-node SLURM here (root) and run the scale-out test on it"
	@echo "make bench  - run the benchmark scripts in benchmarks/"
	@echo "make results DEST=docs/results/<name> - copy a finished study's sentences, tables and metrics"
	@echo "make digests - write digests.json (SHA-256 of every output) of a finished study, to commit with it"

setup: $(STAMP)

# Reinstall when the pins change. pip (not uv/poetry) so that torch comes from the local wheel cache
# where one exists; requirements.lock pins every transitive package to the versions tested.
# --no-compile: pip would byte-compile every module of every package (about 40 s of the set-up on
# the reference machine); Python compiles the fraction the stages import on first import instead,
# and keeps it, which needs bytecode writing on (some shells set PYTHONDONTWRITEBYTECODE: every
# stage would then recompile torch, about 5 s each). .dvcignore keeps __pycache__ out of the code deps.
unexport PYTHONDONTWRITEBYTECODE
#
# torch and its CUDA libraries are two thirds of what the set-up unpacks (4.7 of 7 GB on Linux x86-64;
# torch's CUDA build loads cuDNN when it is imported, so they cannot be left out on a CPU). pip
# unpacks one wheel at a time, so there they are first unpacked by two pips side by side, one per
# core of the reference machine (half the nvidia wheels, and the other half with torch and triton:
# 41 s -> 26 s for the nvidia wheels alone), without their dependencies; the pip after them
# installs the rest and checks every pin, and installs these too should the side-by-side pips fail.
CUDA_PINS := grep -E '^nvidia-' requirements.lock
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@if [ "$$(uname -sm)" = "Linux x86_64" ]; then \
	  $(CUDA_PINS) | awk 'NR % 2 == 1' > $(VENV)/cuda-a.txt; \
	  { $(CUDA_PINS) | awk 'NR % 2 == 0'; grep -E '^(torch|triton)==' requirements.lock; } > $(VENV)/cuda-b.txt; \
	  echo "unpacking torch and its CUDA libraries (two pips side by side)"; \
	  $(BIN)/python -m pip install --quiet --no-compile --no-deps -r $(VENV)/cuda-a.txt & \
	  $(BIN)/python -m pip install --quiet --no-compile --no-deps -r $(VENV)/cuda-b.txt; \
	  wait $$! || true; \
	fi
	$(BIN)/python -m pip install --quiet --no-compile -c requirements.lock -e '.[test]'
	@touch $(STAMP)

# The resolve stage first, on its own: malformed params (empty, a list for a mapping, a scalar for a
# list) then meet the project's validator, not DVC's templating of dvc.yaml; it also records a
# checkpoint file's current bytes. dvc repro then finds resolve up to date (same resolved/ files).
repro: $(STAMP)
	$(BIN)/python stages/resolve.py
	$(BIN)/dvc repro
	@echo
	@$(BIN)/python -m kmx_eval.digests compare
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

# Scale-out on a real one-node SLURM (tests/launch/slurm): start.sh installs slurm-wlm, munge, slurmdbd
# and MariaDB where missing (root, apt-get) and starts the daemons (idempotent); the test module
# skips with its reason where sbatch does not answer. `make test` does not collect it.
test-slurm: $(STAMP)
	tests/launch/slurm/start.sh || echo "SLURM could not be started: the real-cluster test will be skipped"
	KMX_TEST_SLURM=1 $(BIN)/python -m pytest -q -p no:xdist -s -ra tests/launch/slurm

bench: $(STAMP)
	for script in benchmarks/bench_*.py; do $(BIN)/python $$script || exit 1; done

# A finished study's results without its cached data: the report's generated sentences, tables and
# trade-off figures, the DVC metrics files (not the per-image samples), params.yaml and dvc.lock
# (which pins the commit's code and every output's hash). docs/results/thorough/ was made this way.
results:
	@test -n "$(DEST)" || { echo "usage: make results DEST=docs/results/<name>"; exit 2; }
	@test -f reports/summary.md || { echo "no finished study in $(CURDIR): run make repro first"; exit 2; }
	rm -rf "$(DEST)" && mkdir -p "$(DEST)/figures"
	cp reports/summary.md reports/metrics.json reports/platform.json params.yaml dvc.lock "$(DEST)/"
	cp -r reports/tables "$(DEST)/tables"
	cp reports/figures/tradeoff_*.png "$(DEST)/figures/"
	find metrics \( -name '*.json' -o -name metrics.csv \) -exec cp --parents {} "$(DEST)/" \;
	@echo "results of $$(git rev-parse --short HEAD) in $(DEST)"

# The SHA-256 of every output of a finished study, its headline intervals and platform records
# (kmx_eval/digests.py): committed with the default study, so that `make repro` elsewhere can say
# whether it reproduced the committed bytes, and if not, whether the headline numbers moved.
digests: $(STAMP)
	$(BIN)/python -m kmx_eval.digests write

clean-outputs:
	rm -rf data models features heads maps metrics reports/index.html reports/tables reports/figures reports/platform.json
