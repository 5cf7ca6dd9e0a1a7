# Two commands do everything on a fresh machine:
#   make reproduce-figures   # figures from the committed results (offline)
#   make test                # the test suite
# Both create .venv and install the pinned requirements when missing.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.alkit-installed
export MPLBACKEND ?= Agg
export PYTHONHASHSEED ?= 0

.PHONY: venv test reproduce-figures demo benchmarks clean-venv

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

test: $(STAMP)
	$(PY) -m pytest -q

# Until the paper notebooks land, the figures are a short demo on synthetic pools.
reproduce-figures: $(STAMP)
	$(PY) -m alkit.demo --out results/demo

demo: reproduce-figures

benchmarks: $(STAMP)
	$(PY) benchmarks/bench_base_mase.py

clean-venv:
	rm -rf $(VENV)
