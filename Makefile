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

.PHONY: setup browser demo test test-serial bench bench-peers dashboard gpu-check clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	# setuptools prints an "Editable installation" notice box for our package-dir layout: not a problem
	PYTHONWARNINGS="ignore:Editable installation" $(PIP) install --quiet -e ".[dev]"
	touch $(STAMP)

# each run is a new study in results/ (compare them in `make dashboard`)
demo: setup
	$(PY) studies/dqf_search.py --name dqf-demo-$$(date +%Y%m%d-%H%M%S)

# Debian's chromium for the dashboard's browser test and PNG export (Playwright cannot download browsers here).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update && apt-get install -y chromium)

# Two pytest processes at once (tests/shards.py: the Ray-heavy modules beside the rest), then the
# browser test alone: both cores of a 2-core machine work. Arguments: make test PYTEST_ADDOPTS=...
test: setup browser
	$(PY) tests/shards.py -q

# the same tests in one pytest process (slower on small machines; one stream of output)
test-serial: setup browser
	$(PY) -m pytest -q

bench: setup
	$(PY) -m benchmarks

# Our mult against MMSA's MulT on one MOSI-shaped MMSA file (benchmarks/peers.py). MMSA lives in
# its own environment so its pins never touch ours: CPU torch first (as in setup), then MMSA
# and its dependencies from PyPI. Nothing is downloaded while the benchmark runs.
# Sizes: make bench-peers PEERS_ARGS="--train 48 --epochs 3 --repeats 1 --buckets 3" (--buckets K adds a
# length-bucketed run of ours)
PEERS_VENV := .venv-peers
PEERS_ARGS ?= --train 16 --epochs 1 --threads 1 --repeats 1
$(PEERS_VENV)/.installed: Makefile
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet $(TORCH)
	$(PEERS_VENV)/bin/pip install --quiet MMSA==2.2.1
	touch $@

bench-peers: setup $(PEERS_VENV)/.installed
	$(PY) -m benchmarks.peers $(PEERS_ARGS)

# does this machine (or, with ADDRESS=auto, the cluster) work with affectune? exits non-zero if not
ADDRESS ?=
gpu-check: setup
	$(PY) -m affectune doctor $(if $(ADDRESS),--address $(ADDRESS))

# the dashboard over the demo's store (results/); another store: make dashboard STORE=dir
# Private by default (.streamlit/config.toml, repeated here so no other config can widen it):
# loopback only, no usage statistics. From another machine use an SSH tunnel (docs/security.md);
# DASHBOARD_ADDRESS=0.0.0.0 listens on every interface, for trusted networks only.
STORE ?= results
DASHBOARD_ADDRESS ?= 127.0.0.1
DASHBOARD_PORT ?= 8501
dashboard: setup
	$(PY) -m streamlit run dashboard/app.py --server.address $(DASHBOARD_ADDRESS) \
		--server.port $(DASHBOARD_PORT) --browser.gatherUsageStats false -- --store $(STORE)

clean:
	rm -rf $(VENV) $(PEERS_VENV) results build *.egg-info
