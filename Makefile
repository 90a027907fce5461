# Generative AI, from first principles to the frontier — the two commands of the README:
#   make lab    open JupyterLab on the course (creates .venv on first use)
#   make test   run every test, every notebook in the smoke preset included (same)
# Both are idempotent: .venv is built once and rebuilt only when requirements.txt or pyproject.toml change.

SHELL        := bash
.SHELLFLAGS  := -eu -o pipefail -c
PYTHON       ?= python3
VENV         ?= .venv
BIN          := $(VENV)/bin
INSTALLED    := $(VENV)/.installed
KERNEL       := genai-course
NB           ?=
PRESET       ?= smoke
LAB_ARGS     ?=
# Containers and CI often run as root, where Jupyter refuses to start unless told it is intended.
ROOT_FLAG    := $(if $(filter 0,$(shell id -u)),--ServerApp.allow_root=True)
# Serial vs `-n 2 --dist loadfile` with OMP_NUM_THREADS=1 was measured (see README, "Tests"): keep the faster.
PYTEST_ARGS  ?= -n 2 --dist loadfile

# Tests run offline and small: every Hub lookup fails at once instead of hanging (STACK.md), and one
# thread per process because two torch processes with two threads each on 2 cores ran 5x slower.
TEST_ENV := COURSE_PRESET=smoke HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
            HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 PYTHONHASHSEED=0

.PHONY: help install lab test run release stamp times benchmark clean

help:
	@echo "make lab        open JupyterLab on the course (installs .venv the first time)"
	@echo "make test       run all tests and execute every notebook in the smoke preset"
	@echo "make run NB=path/to/notebook.ipynb PRESET=smoke|laptop|full   execute one notebook headless"
	@echo "make release    build the student release (solutions removed) in build/student"
	@echo "make benchmark  time every notebook (PRESET=smoke by default) and print a table"
	@echo "make stamp      re-stamp the Colab badge and setup block into every notebook"
	@echo "make times      write recorded run times into the module READMEs and notebook headers"
	@echo "make clean      remove build outputs (keeps .venv)"

install: $(INSTALLED)

$(INSTALLED): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if v in ((3, 11), (3, 12)) else \
		f"The course needs Python 3.11 or 3.12; {sys.executable} is {v[0]}.{v[1]}. Run: make PYTHON=python3.12 ...")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The machine's pip config prints one harmless warning per package; hide those lines.
	$(BIN)/python -m pip install --quiet -r requirements.txt -e . 2>&1 | { grep -v '^WARNING: Location' || true; }
	$(BIN)/python -m pip check
	$(BIN)/python -m ipykernel install --user --name $(KERNEL) --display-name "Generative AI course (.venv)"
	touch $@

lab: $(INSTALLED)
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 $(ROOT_FLAG) $(LAB_ARGS) 00_prerequisites/00_start_here.ipynb

test: $(INSTALLED)
	$(TEST_ENV) $(BIN)/python -m pytest tests 0[0-5]_*/ --nbval-lax --nbval-current-env \
		--nbval-cell-timeout=300 $(PYTEST_ARGS)

run: $(INSTALLED)
	@test -n "$(NB)" || { echo "usage: make run NB=00_prerequisites/00_start_here.ipynb PRESET=smoke"; exit 2; }
	$(BIN)/python -m utils.course run $(NB) --preset $(PRESET)

release: $(INSTALLED)
	$(BIN)/python -m utils.course release

stamp: $(INSTALLED)
	$(BIN)/python -m utils.course stamp

times: $(INSTALLED)
	$(BIN)/python -m utils.course times

benchmark: $(INSTALLED)
	$(BIN)/python benchmarks/run_notebooks.py --preset $(PRESET)

clean:
	rm -rf build .pytest_cache
