# Two commands for a fresh machine:  make demo  |  make test
# Both create .venv when missing. Without torch in the venv, the CPU wheel torch==2.13.0 is
# installed (never an unpinned torch, which would pull a multi-GB CUDA build). GPU users:
# install your own torch into .venv first, or set TORCH_SPEC.
#   make demo     runtime dependencies only (no reference packages, no system packages)
#   make test     adds the `test` extra (reference packages) and runs `make sysdeps`
#   make sysdeps  installs the Debian tools the tests use (see the line it prints)
#   make test-floors  the declared minimum versions (.ci/floors; not part of make test)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
RUNTIME_STAMP := $(VENV)/.mrirecon-runtime
TEST_STAMP := $(VENV)/.mrirecon-test
SYSDEPS := dicom3tools dcm2niix chromium bart
FLOORS_VENV ?= .venv-floors

.PHONY: demo test test-floors setup setup-test sysdeps benchdeps bench clean weights

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(RUNTIME_STAMP): pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e .
	touch $(RUNTIME_STAMP)

$(TEST_STAMP): $(RUNTIME_STAMP)
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps fastmri==0.3.0
	touch $(TEST_STAMP)

setup: $(RUNTIME_STAMP)

setup-test: $(TEST_STAMP)

# Debian tools used by tests: dciodvfy (dicom3tools) validates our DICOM, dcm2niix converts it for
# the NIfTI cross-check, chromium renders report.html. Tests that need a missing tool are skipped.
sysdeps:
	@missing=""; \
	command -v dciodvfy >/dev/null 2>&1 || missing="$$missing dicom3tools"; \
	command -v dcm2niix >/dev/null 2>&1 || missing="$$missing dcm2niix"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v bart >/dev/null 2>&1 || missing="$$missing bart"; \
	if [ -n "$$missing" ]; then \
	  echo "sysdeps: installing$$missing with apt-get (DICOM validator, DICOM->NIfTI converter, headless browser for the report test, BART for the .cfl parity tests)"; \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "sysdeps: apt-get failed; the tests that need$$missing will be skipped"; \
	  else echo "sysdeps: not root or no apt-get; the tests that need$$missing will be skipped"; fi; \
	fi

# BART (Debian's `bart`, ecalib + pics) is the scanner-side peer of benchmarks/bench_pipeline.py;
# `make sysdeps` installs it too (tests/io/test_bart_cfl.py checks the .cfl format against it).
benchdeps:
	@if ! command -v bart >/dev/null 2>&1; then \
	  echo "benchdeps: installing bart with apt-get (the BART peer of the pipeline benchmark)"; \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bart >/dev/null) \
	      || echo "benchdeps: apt-get failed; the BART rows of the benchmark are skipped"; \
	  else echo "benchdeps: not root or no apt-get; the BART rows of the benchmark are skipped"; fi; \
	fi

demo: setup
	$(VENV)/bin/mrirecon demo --output demo_out

# The suite runs on every core with pytest-xdist (`-n auto`: tests/conftest.py counts the cores as
# mrirecon.threads does, cgroup quota included, and gives each worker its share of torch threads);
# on 2 cores that halves its time. `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= auto
# A test still running after TEST_TIMEOUT seconds fails (pytest-timeout) instead of stalling the
# run: the slowest test takes about 1 minute on 2 busy cores.
TEST_TIMEOUT ?= 600

test: setup-test sysdeps
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal --timeout $(TEST_TIMEOUT) tests

# Every runtime dependency at its pyproject.toml floor (pins derived from pyproject.toml), then
# numpy 2.0.0 with the lowest releases that allow it, each in a fresh venv ($(FLOORS_VENV),
# $(FLOORS_VENV)-numpy2): demo --quick and tests/io, tests/operators. Minutes; needs the network.
test-floors:
	PYTHON=$(PYTHON) VENV=$(FLOORS_VENV) TORCH_SPEC="$(TORCH_SPEC)" .ci/floors

bench: setup-test benchdeps
	$(PY) benchmarks/run_all.py

# Rebuild the generic PnP prior (mrirecon/weights/pnp_dncnn_diverse.pt; ~1 h on one CPU thread,
# see its card), the deployment-geometry MoDL and E2E-VarNet (modl_fastmri_diverse.pt,
# varnet_fastmri_diverse.pt; 90 / 90 min, one thread plus a data worker each) and the
# LoDoPaB-geometry CT models (staged_ct_lodopab.pt: two runs, the second continuing the first,
# 59 + 50 min with sample prefetching on a second core, measured 2026-12-02; primal_dual_lodopab.pt:
# two runs, the second continuing the first, 80 + 38 min, one thread). The other shipped weights: commands in mrirecon/weights/README.md.
weights: setup
	OMP_NUM_THREADS=1 $(VENV)/bin/mrirecon train prior --out mrirecon/weights/pnp_dncnn_diverse.pt \
	  --depth 8 --features 32 --batch 16 --patch 64 --seed 0 --max-seconds 3600 --threads 1
	OMP_NUM_THREADS=1 $(VENV)/bin/mrirecon train modl --out mrirecon/weights/modl_fastmri_diverse.pt \
	  --threads 1 --seed 0 --iterations 10 --widths 320 368 --max-seconds 5400 --val-every 150 --val-slices 4
	OMP_NUM_THREADS=1 $(VENV)/bin/mrirecon train staged_ct --out mrirecon/weights/staged_ct_lodopab.pt \
	  --iterations 1 --budget-s 3560 --seed 0 --prefetch --threads 1
	OMP_NUM_THREADS=1 $(VENV)/bin/mrirecon train staged_ct --out mrirecon/weights/staged_ct_lodopab.pt \
	  --init mrirecon/weights/staged_ct_lodopab.pt --iterations 1 --budget-s 3000 --seed 1 --patch 160 \
	  --lr 0.0003 --prefetch --threads 1
	OMP_NUM_THREADS=1 $(VENV)/bin/mrirecon train varnet --out mrirecon/weights/varnet_fastmri_diverse.pt \
	  --threads 1 --seed 0 --max-seconds 5400 --val-every 150 --val-slices 4
	OMP_NUM_THREADS=1 $(VENV)/bin/mrirecon train primal_dual_ct --out mrirecon/weights/primal_dual_lodopab.pt \
	  --budget-s 4800 --seed 0 --iterations 8 --features 16 --threads 1
	OMP_NUM_THREADS=1 $(VENV)/bin/mrirecon train primal_dual_ct --out mrirecon/weights/primal_dual_lodopab.pt \
	  --init mrirecon/weights/primal_dual_lodopab.pt --budget-s 2300 --seed 1 --iterations 8 --features 16 \
	  --lr 0.0003 --threads 1

clean:
	rm -rf $(VENV) $(FLOORS_VENV) $(FLOORS_VENV)-numpy2 demo_out .pytest_cache
