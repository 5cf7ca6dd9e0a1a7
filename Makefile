# Two commands do everything on a fresh machine:
#   make reproduce-figures   # figures from the committed results (offline)
#   make test                # the test suite (make test-fast: all but the slow tests, under a minute)
# Both create .venv and install the pinned requirements when missing.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.alkit-installed
export MPLBACKEND ?= Agg
export PYTHONHASHSEED ?= 0

.PHONY: venv test test-fast reproduce-figures reproduce-results reproduce-class-count reproduce-mechanism reproduce-finetune \
	lab test-browser demo \
	benchmarks clean-venv

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@# setuptools' build backend warns about every editable install (a note for package authors):
	@# its output goes to a log, shown only when the install fails.
	$(PY) -m pip install --quiet --no-deps -e . > $(VENV)/editable-install.log 2>&1 || (cat $(VENV)/editable-install.log; exit 1)
	@touch $@

test: $(STAMP)
	$(PY) -m pytest -q

# The inner loop: every test but those marked slow (sweeps, subprocesses, notebook smoke runs), under a
# minute on 2 cores; make test (CI) still runs them all. -m replaces pyproject's -m 'not browser'.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not browser"

# Every figure (PNG+PDF) and table (CSV+Markdown) from the results committed in results/runs/cpu,
# offline, by executing notebooks a-e with papermill (copies in notebooks/executed/, ignored).
reproduce-figures: $(STAMP)
	$(PY) -m alkit reproduce figures

# SCALE=smoke: every notebook end to end on tiny data (CI; synthetic stand-ins without ../shared).
# SCALE=cpu: the offline sweeps into results/runs/cpu (resumable), then the figures.
# SCALE=paper: the authors' schedule; see docs/reproduce.md "Paper scale" (GPU, your ImageNet and checkpoints).
SCALE ?= smoke
# JOBS: worker processes of the cpu / paper sweeps, each with cpu count // JOBS torch threads; the cpu
# sweep defaults to 2 (see results/tables/sweep_times.md), the paper sweep to 1.
JOBS ?= $(if $(filter cpu,$(SCALE)),2,1)
reproduce-results: $(STAMP)
	$(PY) -m alkit reproduce results --scale $(SCALE) $(if $(filter-out smoke,$(SCALE)),--jobs $(JOBS))

# The class-count experiment (Tiny-ImageNet restricted to K = 10 … 200 classes; resumable), then notebook g.
CLASS_COUNT_JOBS ?= 2
reproduce-class-count: $(STAMP)
	$(PY) -m alkit reproduce class-count --jobs $(CLASS_COUNT_JOBS)

# The mechanism experiment (claim 1: class balance and composition as knobs; resumable), then notebooks i and e.
MECHANISM_JOBS ?= 2
reproduce-mechanism: $(STAMP)
	$(PY) -m alkit reproduce mechanism --jobs $(MECHANISM_JOBS)

# The fine-tuning sweep (alkit.finetune.FINETUNE_SCALES; resumable) into results/runs/finetune-<scale>.
# SCALE=gpu (the default here): CIFAR-10, 5 strategies x 3 seeds, ResNet-18 from scratch, one GPU.
# SCALE=paper: the authors' schedules, WEIGHTS=<checkpoint> (and DATASETS=cifar10,cifar10-lt or imagenet).
# SCALE=cpu: a 600-image slice on the CPU (minutes). DEVICE=cpu|cuda; DATA_ROOT: the archives' folder.
FINETUNE_SCALE = $(if $(filter command line environment,$(origin SCALE)),$(SCALE),gpu)
FINETUNE_FLAGS = $(if $(WEIGHTS), --weights $(WEIGHTS))$(if $(DATASETS), --datasets $(DATASETS))$(if \
	$(DEVICE), --device $(DEVICE))$(if $(DATA_ROOT), --data-root $(DATA_ROOT))
reproduce-finetune: $(STAMP)
	$(PY) -m alkit reproduce finetune --scale $(FINETUNE_SCALE)$(FINETUNE_FLAGS)

# JupyterLab on the notebooks: a double-click opens a .py notebook as a notebook (jupytext's viewer set as
# the default for Python files in this environment's settings); as root (a container) it adds --allow-root.
# LAB_ARGS passes options through, e.g. make lab LAB_ARGS="--no-browser --port 8899". It drops this Makefile's
# MPLBACKEND=Agg, so that the kernels draw figures inline (make test-browser checks all this in Chromium).
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json
LAB_ARGS ?=
# Each notebook is listed once, as its .py (jupytext opens it as a notebook and keeps outputs in the
# paired .ipynb): .ipynb files are hidden from the file browser (executed copies too; open them by path).
LAB_HIDDEN ?= ['__pycache__', '*.pyc', '*.pyo', '.DS_Store', '*.so', '*.dylib', '*~', '*.ipynb']
lab: $(STAMP)
	@mkdir -p $(dir $(LAB_SETTINGS))
	@printf '%s\n' '{"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"python": "Jupytext Notebook"}}}' \
		> $(LAB_SETTINGS)
	env -u MPLBACKEND $(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) \
		--ContentsManager.hide_globs="$(LAB_HIDDEN)" $(LAB_ARGS) notebooks/

# The browser test of make lab (tests/browser/test_lab.py): headless Chromium opens the Lab that `make lab`
# starts, double-clicks a .py notebook, runs it and waits for a figure. On first use it installs Debian's
# chromium (apt-get, as root) and playwright (requirements-browser.txt) into the venv; CHROMIUM=path for another.
CHROMIUM ?= /usr/bin/chromium
BROWSER_STAMP := $(VENV)/.alkit-browser-installed
$(BROWSER_STAMP): requirements-browser.txt $(STAMP)
	$(PY) -m pip install --quiet -r requirements-browser.txt
	@touch $@
test-browser: $(BROWSER_STAMP)
	@test -x $(CHROMIUM) || if [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's chromium (apt-get, about a minute; log in $(VENV)/chromium-install.log)"; \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
			chromium fonts-liberation) > $(VENV)/chromium-install.log 2>&1 || (cat $(VENV)/chromium-install.log; exit 1); \
	else \
		echo "make test-browser needs Chromium at $(CHROMIUM): install it (Debian: sudo apt-get install chromium)"; \
		echo "or pass the path of one, make test-browser CHROMIUM=/path/to/chromium"; exit 1; \
	fi
	ALKIT_CHROMIUM=$(CHROMIUM) $(PY) -m pytest -q -rA -m browser tests/browser

# A one-minute demo on synthetic Gaussian mixtures (no data needed).
demo: $(STAMP)
	$(PY) -m alkit demo --out results/demo

benchmarks: $(STAMP)
	$(PY) benchmarks/bench_base_mase.py

clean-venv:
	rm -rf $(VENV)
