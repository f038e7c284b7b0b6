# affectune: `make demo` runs a study on the embedded synthetic benchmark, `make test` the suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
# torch is pinned to the CPU wheel first: any looser requirement resolves to a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

export RAY_USAGE_STATS_ENABLED := 0
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test bench dashboard clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(PY) -m affectune demo

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) results build *.egg-info
