# The README's commands. Each sets up its own virtual environment first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv venv-onnx venv-jazzy demo test bench gpu-check clean

$(STAMP): requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# The torch-free install: exported models on ONNX Runtime (README, Deployment without torch).
ONNX_VENV := .venv-onnx
ONNX_STAMP := $(ONNX_VENV)/.installed

$(ONNX_STAMP): requirements-onnx.txt setup.py
	$(PYTHON) -m venv $(ONNX_VENV)
	$(ONNX_VENV)/bin/python -m pip install -q --upgrade pip
	$(ONNX_VENV)/bin/python -m pip install -q -r requirements-onnx.txt
	$(ONNX_VENV)/bin/python -m pip install -q --no-build-isolation --no-deps -e .
	touch $(ONNX_STAMP)

venv-onnx: $(ONNX_STAMP)

# ROS 2 Jazzy from its PyPI wheels: the tests marked `ros` run here too (docs/distributions.md).
# The Kilted venv's library path must not leak into it: each venv's Python sets its own.
JAZZY_VENV := .venv-jazzy
JAZZY_STAMP := $(JAZZY_VENV)/.installed
JAZZY := env -u LD_LIBRARY_PATH -u _ROS_WHEELS_BOOTSTRAP_COMPLETE $(JAZZY_VENV)/bin/python

# torch (with its CUDA libraries, ~5 GB from PyPI) is hard-linked from .venv, not copied.
$(JAZZY_STAMP): requirements-jazzy.txt setup.py | $(STAMP)
	$(PYTHON) -m venv $(JAZZY_VENV)
	$(PY) test/support/link_packages.py $(JAZZY_VENV) torch torchvision
	$(JAZZY) -m pip install -q --upgrade pip
	$(JAZZY) -m pip install -q -r requirements-jazzy.txt
	$(JAZZY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $(JAZZY_STAMP)

venv-jazzy: $(JAZZY_STAMP)

# Main job: the ROS 2 pipeline on the built-in scenes (needs the CLIP RN50 weights; see README).
demo: $(STAMP)
	$(VENV)/bin/depthclip-demo --out demo_out $(DEMO_ARGS)

test: $(STAMP) $(ONNX_STAMP) $(JAZZY_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -ra test $(TEST_ARGS)
	$(JAZZY) -m pytest -ra test --ros-only $(TEST_ARGS)

bench: $(STAMP)
	$(PY) -m bench $(BENCH_ARGS)

# On a lent CUDA host, whose Python has torch but no package index (../shared/gpu/README.md:
# python3 with the wheels activated): the CUDA tests, captured-vs-eager for every structural
# option, a capture churn, the CUDA benchmark rows and one verdict table (bench/gpu_check.py).
# The project's venv where there is one (a developer's machine says "no CUDA device" in one
# line), else python3 (a lent GPU host gets the checkout without .venv).
GPU_PYTHON ?= $(if $(wildcard $(PY)),$(PY),python3)
gpu-check:
	$(GPU_PYTHON) -m bench.gpu_check $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) $(ONNX_VENV) $(JAZZY_VENV) build install log demo_out *.egg-info
