# Generative AI, from first principles to the frontier — the two commands of the README:
#   make lab    open JupyterLab on the course (creates .venv on first use)
#   make test   run every test, every notebook in the smoke preset included (same)
# Both are idempotent: .venv is built once and rebuilt only when requirements.txt or pyproject.toml change.
# An environment you made yourself (conda) is used as it is, with no .venv: make lab VENV=$CONDA_PREFIX

SHELL        := bash
.SHELLFLAGS  := -eu -o pipefail -c
PYTHON       ?= python3
VENV         ?= .venv
$(if $(strip $(VENV)),,$(error VENV is empty. With conda: `conda activate genai-course` first, so that \
  VENV=$$CONDA_PREFIX names the environment; or leave VENV out to use .venv))
BIN          := $(VENV)/bin
INSTALLED    := $(VENV)/.installed
KERNEL       := genai-course
NB           ?=
# make run / make benchmark: PRESET on the command line wins, else COURSE_PRESET from the environment,
# else no --preset at all and the course CLI picks (it reads COURSE_PRESET or .env, else smoke).
RUN_PRESET   := $(or $(PRESET),$(COURSE_PRESET))
LAB_ARGS     ?=
LANDING      := 00_prerequisites/00_start_here.ipynb
# Containers and CI often run as root, where Jupyter refuses to start unless told it is intended.
ROOT_FLAG    := $(if $(filter 0,$(shell id -u)),--ServerApp.allow_root=True)
# Serial vs `-n 2 --dist loadfile` with OMP_NUM_THREADS=1 was measured (see README, "Tests"): keep the faster.
PYTEST_ARGS  ?= -n 2 --dist loadfile
# The course needs Python 3.11 or 3.12: checked on $(PYTHON) before it makes .venv, and on the environment used.
PY_OK        := -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if v in ((3, 11), (3, 12)) else \
	f"The course needs Python 3.11 or 3.12; {sys.executable} is {v[0]}.{v[1]}. \
	Run: make PYTHON=python3.12 ... (a new .venv), or VENV=<an environment with 3.11 or 3.12>")'

# Tests run offline and small: every Hub lookup fails at once instead of hanging, and one thread per
# process because two torch processes with two threads each on 2 cores ran 5x slower.
TEST_ENV := COURSE_PRESET=smoke HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
            HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 PYTHONHASHSEED=0

KERNEL_PATH := JUPYTER_PATH="$(abspath $(VENV))/share/jupyter$${JUPYTER_PATH:+:$$JUPYTER_PATH}"

.PHONY: help install kernel lab lab-student test run chat release stamp times benchmark site clean

help:
	@echo "make lab        open JupyterLab on the whole course at the start-here notebook (installs .venv the first time)"
	@echo "make test       run all tests and execute every notebook in the smoke preset"
	@echo "make run NB=path/to/notebook.ipynb [PRESET=smoke|laptop|full]   execute one notebook headless"
	@echo "                (no PRESET: \$$COURSE_PRESET, else the course default; the preset used is printed)"
	@echo "make chat       start the chatbot app of 03.03 on http://127.0.0.1:8001 with the course's LLM server [CHAT_ARGS=...]"
	@echo "make install    create .venv (or use VENV=...) from requirements.txt and install the course helpers"
	@echo "make kernel     register the Jupyter kernels of the environment (lab and test do it every time)"
	@echo "make lab-student  open JupyterLab on the student edition in build/student (built the first time)"
	@echo "make release    build the student edition (exercises without solutions) in build/student [RELEASE_ARGS=...]"
	@echo "make site       the course site in build/site/<preset>/html from every notebook executed at PRESET (default smoke)"
	@echo "make benchmark  time every notebook (PRESET as for run, smoke by default) and print a table"
	@echo "make stamp      re-stamp the Colab badge and setup block into every notebook"
	@echo "make times      write recorded run times into the module READMEs and notebook headers"
	@echo "make clean      remove build outputs (keeps .venv and build/student, where your answers may be)"
	@echo "Any target with VENV=\$$CONDA_PREFIX uses that (conda) environment instead of .venv."

install: $(INSTALLED)

# .venv is created only when $(VENV) has no python: an existing environment (VENV=$CONDA_PREFIX) is used as
# it is; pip then adds only what it lacks (with environment.yml's pins: the course helpers, `-e .`).
$(INSTALLED): requirements.txt pyproject.toml
	test -x $(BIN)/python || { $(PYTHON) $(PY_OK) && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python $(PY_OK)
	# The machine's pip config prints one harmless warning per package; hide those lines.
	$(BIN)/python -m pip install --quiet -r requirements.txt -e . 2>&1 | { grep -v '^WARNING: Location' || true; }
	$(BIN)/python -m pip check
	touch $@

# Kernels are registered on every `make lab` and `make test` (0.2 s each), not once behind the stamp: the
# stamp lives in the environment but a --user kernel lives in ~/.local, which another HOME or
# `jupyter kernelspec remove` changes without make knowing.
# - python3, --sys-prefix: the kernel every notebook names, written inside the environment with this
#   environment's absolute python (the packaged one says plain `python`, whichever is first on PATH).
# - genai-course, --user: a convenience for frontends outside the environment (VS Code, another JupyterLab),
#   which look in the user's folder, not in this environment; make lab itself needs only python3.
kernel: $(INSTALLED)
	$(BIN)/python -m ipykernel install --sys-prefix
	$(BIN)/python -m ipykernel install --user --name $(KERNEL) \
		--display-name "Generative AI course ($(notdir $(abspath $(VENV))))"

# The server's root is the repository, so the course map's links to every module open; the start-here
# notebook is the landing page. JUPYTER_PATH puts this environment's kernels first: no python3 kernelspec in
# ~/.local or elsewhere can shadow the course environment's.
lab: kernel
	JUPYTER_PATH="$(abspath $(VENV))/share/jupyter$${JUPYTER_PATH:+:$$JUPYTER_PATH}" \
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir="$(CURDIR)" \
		--LabApp.default_url=/lab/tree/$(LANDING) $(ROOT_FLAG) $(LAB_ARGS)

# Notebooks run as `make run` runs them (conftest.py): their executed copies land in build/executed/smoke/, so
# the course site is then built from them without executing anything twice, and checked page by page in
# Chromium. JUPYTER_PATH: the notebooks' python3 kernel is this environment's, whatever ~/.local holds.
test: kernel
	$(TEST_ENV) $(KERNEL_PATH) $(BIN)/python -m pytest tests 0[0-5]_*/ --ignore=tests/test_site_browser.py \
		$(PYTEST_ARGS)
	$(MAKE) --no-print-directory site PRESET=smoke
	$(TEST_ENV) $(BIN)/python -m pytest tests/test_site_browser.py --site build/site/smoke

run: $(INSTALLED)
	@test -n "$(NB)" || { echo "usage: make run NB=00_prerequisites/00_start_here.ipynb [PRESET=smoke]"; exit 2; }
	$(BIN)/python -m utils.course run $(NB) $(if $(RUN_PRESET),--preset $(RUN_PRESET))

# The chatbot app of 03_llm_apps/03_chatbot_app.ipynb; e.g. CHAT_ARGS="--port 9000 --policy summary".
chat: $(INSTALLED)
	$(BIN)/python -m utils.chatbot_app $(CHAT_ARGS)

# The student edition (utils/student.py). It never replaces notebooks a student changed in it. The workflow
# that publishes it to the `student` branch runs `make release` too; RELEASE_ARGS="--colab-url URL" points
# its badges and Colab installs at another repository than pyproject.toml's.
STUDENT_DIR  := build/student
release: $(INSTALLED)
	$(BIN)/python -m utils.course release --out $(STUDENT_DIR) $(RELEASE_ARGS)

# The student edition, opened like `make lab`. It is built again when a notebook or a utils module of the
# course is newer than its marker file (after a `git pull`); the release never replaces a notebook the student
# changed. PYTHONPATH puts the edition's own `utils` first: it holds the stored self-checks the course's lacks.
$(STUDENT_DIR)/.student-release: $(wildcard 0[0-5]_*/*.ipynb) $(wildcard utils/*.py) | $(INSTALLED)
	$(BIN)/python -m utils.course release --out $(STUDENT_DIR) $(RELEASE_ARGS) || { test -f $@ && echo \
		"The student edition is older than the course but holds your work, so it is kept as it is (see above)."; }

lab-student: $(STUDENT_DIR)/.student-release kernel
	PYTHONPATH="$(abspath $(STUDENT_DIR))$${PYTHONPATH:+:$$PYTHONPATH}" \
	JUPYTER_PATH="$(abspath $(VENV))/share/jupyter$${JUPYTER_PATH:+:$$JUPYTER_PATH}" \
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir="$(abspath $(STUDENT_DIR))" \
		--LabApp.default_url=/lab/tree/$(LANDING) $(ROOT_FLAG) $(LAB_ARGS)

stamp: $(INSTALLED)
	$(BIN)/python -m utils.course stamp

times: $(INSTALLED)
	$(BIN)/python -m utils.course times

benchmark: $(INSTALLED)
	$(BIN)/python benchmarks/run_notebooks.py $(if $(RUN_PRESET),--preset $(RUN_PRESET))

# The course site (docs/site.md). Each notebook is executed into build/executed/<preset>/ and executed again
# only when the notebook is newer than that copy: make's own execution cache (`make -j2 site` runs two at a
# time). A run that fails leaves no copy behind, so it is never published. The smoke preset runs offline,
# as the tests do; PRESET=laptop on a networked machine publishes the laptop outputs.
SITE_PRESET  := $(or $(PRESET),smoke)
EXECUTED_DIR := build/executed/$(SITE_PRESET)
EXECUTED     := $(addprefix $(EXECUTED_DIR)/,$(sort $(wildcard 0[0-5]_*/*.ipynb)))

site: $(EXECUTED)
	$(BIN)/python -m utils.site --preset $(SITE_PRESET) --executed $(EXECUTED_DIR)

$(EXECUTED_DIR)/%.ipynb: %.ipynb | kernel
	$(if $(filter smoke,$(SITE_PRESET)),$(TEST_ENV)) $(KERNEL_PATH) $(BIN)/python -m utils.course run $< \
		--preset $(SITE_PRESET) --out $(EXECUTED_DIR) || { rm -f $@; exit 1; }

# build/student stays: a student's answers may be in it (`make release` replaces it when they are not).
clean:
	rm -rf $(filter-out $(STUDENT_DIR),$(wildcard build/*)) .pytest_cache
