# The two entry points of the README. Both create the virtual environment (.venv) when it is missing.
#   make demo   set up, then run the main job on the bundled world
#   make test   set up, then run the test suite (what CI runs)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Offline by default, and single-threaded BLAS for the small models (far faster on 2 shared cores).
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY ?= 1
export GRADIO_ANALYTICS_ENABLED ?= False
export OMP_NUM_THREADS ?= 1
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: demo test venv cuda-check bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet 'setuptools>=77.0.3,<81'
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# Until the SynthFaces generator is committed (issue 4), the demo shows the pipeline on a randomly
# initialised 64 px generator: rosinality .pt -> native .safetensors -> images for seeds 0-7.
DEMO := runs/demo
demo: $(STAMP)
	$(PY) -m gan_adapt init --out $(DEMO)/g64_random.pt --size 64 --style-dim 128 --n-mlp 4 \
		--channel-base 4096 --channel-max 128 --with-d
	$(PY) -m gan_adapt convert $(DEMO)/g64_random.pt $(DEMO)/g64_random.safetensors
	$(PY) -m gan_adapt generate --ckpt $(DEMO)/g64_random.safetensors --seeds 0-7 --truncation 0.7 \
		--outdir $(DEMO)/images --save-raw $(DEMO)/images/raw.npy
	@echo "demo: images in $(DEMO)/images (grid.png), raw float32 output in $(DEMO)/images/raw.npy"

cuda-check: $(STAMP)
	$(PY) -m ops.build_check

bench: $(STAMP)
	OMP_NUM_THREADS= $(PY) -m benchmarks.generator_speed

clean:
	rm -rf $(VENV) runs .pytest_cache
