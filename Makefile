# Everything installs into a local .venv on first use. torch==2.13.0 goes first: it is a local CPU
# wheel here, and installing it before the package keeps pip from fetching a multi-GB CUDA build.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-slow lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,sparse,data]"
	$(PY) -m pip install -q --no-deps torchjd==0.18.0
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/moomtl demo --out runs/demo

# Two pytest processes (pytest-xdist): the suite is single-threaded per test (tests/conftest.py).
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n 2

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

# Peers for the min-norm benchmark are installed without their dependencies (LibMTL's would pull
# torchvision); only their solver files are loaded, never copied.
bench: $(STAMP)
	$(PY) -m pip install -q --no-deps LibMTL==1.1.5 torchjd==0.18.0
	OMP_NUM_THREADS=1 $(PY) benchmarks/min_norm_bench.py --out docs/benchmarks_min_norm.md
	OMP_NUM_THREADS=1 $(PY) benchmarks/step_overhead_bench.py --threads 1 --out docs/benchmarks_steps.md
	$(PY) benchmarks/paper_models_bench.py --threads 2 --out docs/benchmarks_paper_models.md

clean:
	rm -rf $(VENV) runs .pytest_cache
