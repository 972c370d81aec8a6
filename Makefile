# Two commands for a fresh machine:  make demo  |  make test
# Both create .venv when missing. Without torch in the venv, the CPU wheel torch==2.13.0 is
# installed (never an unpinned torch, which would pull a multi-GB CUDA build). GPU users:
# install your own torch into .venv first, or set TORCH_SPEC.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.mrirecon-installed

.PHONY: demo test setup setup-test sysdeps bench clean weights

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps fastmri==0.3.0
	touch $(STAMP)

setup: $(STAMP)

# DICOM validators used by the tests (dciodvfy from dicom3tools, dcm2niix); best effort.
sysdeps:
	@if ! command -v dciodvfy >/dev/null 2>&1 || ! command -v dcm2niix >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dicom3tools dcm2niix >/dev/null) \
	      || echo "note: could not install dicom3tools/dcm2niix; validator tests will be skipped"; \
	  else echo "note: dciodvfy/dcm2niix missing; validator tests will be skipped"; fi; \
	fi

demo: setup
	$(VENV)/bin/mrirecon demo --output demo_out

test: setup sysdeps
	$(PY) -m pytest -q tests

bench: setup
	$(PY) benchmarks/run_all.py

# Rebuild the generic PnP prior (mrirecon/weights/pnp_dncnn_diverse.pt; ~1 h on one CPU thread,
# see its card). The other shipped weights: commands in mrirecon/weights/README.md.
weights: setup
	OMP_NUM_THREADS=1 $(PY) -m mrirecon.training.denoiser_prior --out mrirecon/weights/pnp_dncnn_diverse.pt \
	  --depth 8 --features 32 --batch 16 --patch 64 --seed 0 --max-seconds 3600

clean:
	rm -rf $(VENV) demo_out .pytest_cache
