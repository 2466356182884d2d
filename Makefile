# Common tasks. Run from the repository root; PYTHON picks the interpreter.
PYTHON ?= python3
export PYTHON

.PHONY: help setup setup-test serve-env demo test test-avx2 test-fast gpu-check lint format clean

GPU_CHECK_OUT ?= results/gpu_check

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup:  ## install runtime dependencies (keeps an installed torch)
	bash scripts/setup.sh runtime

setup-test:  ## install runtime and test dependencies, and the serving environment
	bash scripts/setup.sh test
	bash scripts/serve_env.sh || echo "no serving environment: the Triton tests will skip"

serve-env:  ## the Triton serving environment (.venv-serve, numpy<2; docs/DEPLOYMENT.md)
	bash scripts/serve_env.sh

demo: setup  ## the main job: short CPU runs on small bundled data, with their metrics
	$(PYTHON) -m scripts.demo

test: setup-test lint  ## lint, the whole suite (slow tests included), then the AVX2 rerun
	$(PYTHON) -m pytest
	$(MAKE) test-avx2

test-avx2:  ## the precision-sensitive tests again, as on a CPU with AVX2 only
	ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 $(PYTHON) -m pytest -m isa

test-fast:  ## the suite without the slow end-to-end tests
	$(PYTHON) -m pytest -m "not slow"

gpu-check:  ## every GPU path in under 8 minutes on one GPU; report in GPU_CHECK_OUT
	$(PYTHON) -m scripts.gpu_check --out-dir $(GPU_CHECK_OUT)

lint:  ## ruff lint and format check
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format:  ## apply ruff's fixes and formatting
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

clean:  ## remove caches and demo outputs
	rm -rf .pytest_cache .ruff_cache results/demo
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
