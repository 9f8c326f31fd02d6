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

.PHONY: demo test app venv cuda-check bench study docs docs-build clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet 'setuptools>=77.0.3,<81'
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The main job: one-shot adaptation of the bundled SynthFaces StyleGAN2 to "sketch" from one reference image with a
# StyleSpace direction, guided by the bundled style encoder and the learned image analogy of the reference (a minute
# or two on 2 CPU cores, the end-of-run report included), then images with the direction.
DEMO := runs/demo
BUNDLED_G := checkpoints/synthfaces_stylegan2.safetensors
demo: $(STAMP)
	rm -rf $(DEMO)
	$(PY) -m gan_adapt train --config configs/oneshot_encoder.yaml exp.run_dir=$(DEMO)/oneshot_sketch \
	  base=$(BUNDLED_G) target.image=synthfaces:sketch
	$(PY) -m gan_adapt generate --ckpt $(BUNDLED_G) --seeds 0-7 --direction $(DEMO)/oneshot_sketch/direction.safetensors \
	  --outdir $(DEMO)/sketch
	@echo "demo: direction file $(DEMO)/oneshot_sketch/direction.safetensors, before/after grid" \
		"$(DEMO)/oneshot_sketch/before_after.png, report $(DEMO)/oneshot_sketch/eval/report.json," \
		"images with the direction in $(DEMO)/sketch"

app: $(STAMP)
	$(PY) app.py

cuda-check: $(STAMP)
	$(PY) -m ops.build_check

bench: $(STAMP)
	env -u OMP_NUM_THREADS $(PY) -m benchmarks.generator_speed
	env -u OMP_NUM_THREADS $(PY) -m benchmarks.parameterization_speed
	env -u OMP_NUM_THREADS $(PY) -m benchmarks.diffusion_speed
	env -u OMP_NUM_THREADS $(PY) -m benchmarks.app_speed

# The study (reports/quick/): StyleDomain's findings on SynthFaces, 3 seeds, 198 cells (26 minutes on an idle 2-core machine).
study: $(STAMP)
	env -u OMP_NUM_THREADS $(PY) -m experiments.study --config configs/study/quick.yaml

# The documentation site (mkdocs.yml, docs/): served with live reload at http://127.0.0.1:8000, or built into
# build/site in strict mode as CI builds it (a broken link or anchor, or a page missing from the nav, fails).
docs: $(STAMP)
	$(PY) -m mkdocs serve

docs-build: $(STAMP)
	$(PY) -m mkdocs build --strict

clean:
	rm -rf $(VENV) runs .pytest_cache build/site
