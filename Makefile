# The README's commands. Each sets up its own virtual environment first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv venv-onnx venv-jazzy ort-wrappers tf2 tf2-kilted tf2-jazzy demo test test-kilted \
    test-jazzy bench gpu-check clean

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

# torch (with its CUDA libraries, ~5 GB from PyPI) and openvino are hard-linked from .venv, not
# copied.
$(JAZZY_STAMP): requirements-jazzy.txt setup.py | $(STAMP)
	$(PYTHON) -m venv $(JAZZY_VENV)
	$(PY) test/support/link_packages.py $(JAZZY_VENV) torch torchvision openvino
	$(JAZZY) -m pip install -q --upgrade pip
	$(JAZZY) -m pip install -q -r requirements-jazzy.txt
	$(JAZZY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $(JAZZY_STAMP)

venv-jazzy: $(JAZZY_STAMP)

# ONNX Runtime's Python wrapper (onnxruntime_inference_collection.py) of the releases that GPU
# hosts and Jetsons run: the GPU stand-in tests run each one's rules (its fallback, its
# readings) over this machine's binding (test/support/onnx_runtime_stand_in.py). Only that
# file of each wheel is kept. Without them (no PyPI) those tests skip and say why.
ORT_WRAPPERS := .ort-wrappers
ORT_WRAPPER_VERSIONS := 1.18.0 1.22.0 1.23.2
ORT_WRAPPERS_STAMP := $(ORT_WRAPPERS)/.ready

$(ORT_WRAPPERS_STAMP): | $(STAMP)
	rm -rf $(ORT_WRAPPERS) && mkdir -p $(ORT_WRAPPERS)/wheels
	for v in $(ORT_WRAPPER_VERSIONS); do \
	    $(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
	        --platform manylinux_2_27_x86_64 -d $(ORT_WRAPPERS)/wheels onnxruntime==$$v \
	    && mkdir -p $(ORT_WRAPPERS)/$$v \
	    && $(PY) -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read("onnxruntime/capi/onnxruntime_inference_collection.py"))' \
	        $(ORT_WRAPPERS)/wheels/onnxruntime-$$v-*.whl > $(ORT_WRAPPERS)/$$v/onnxruntime_inference_collection.py \
	    || exit 1; \
	done
	rm -rf $(ORT_WRAPPERS)/wheels
	touch $(ORT_WRAPPERS_STAMP)

ort-wrappers: $(ORT_WRAPPERS_STAMP)

# tf2 (tf2_msgs, tf2, tf2_py, tf2_ros_py), which PyPI's ROS wheels lack, built from geometry2's
# sources in ../shared/vendor/geometry2 against each venv's wheels, kept in .tf2/<distribution>;
# `make test` runs every test with it, as on a ROS install. Without ../shared (a user's clone)
# nothing is built and the tf2 tests skip and say why; with it, a failed build fails `make test`.
TF2 := test/support/tf2_from_source.py
TF2_KILTED := .tf2/kilted/.ready
TF2_JAZZY := .tf2/jazzy/.ready

$(TF2_KILTED): | $(STAMP)
	$(PY) $(TF2) build

$(TF2_JAZZY): | $(JAZZY_STAMP)
	$(JAZZY) $(TF2) build

tf2-kilted: $(TF2_KILTED)
tf2-jazzy: $(TF2_JAZZY)
tf2: tf2-kilted tf2-jazzy

# Main job: the ROS 2 pipeline on the built-in scenes (needs the CLIP RN50 weights; see README).
demo: $(STAMP)
	$(VENV)/bin/depthclip-demo --out demo_out $(DEMO_ARGS)

# Three pytest processes (pytest-xdist) on CI's two cores: most tests wait on processes they
# start, so two left the cores idle a fifth of the time; the tests that start a local Ray go to
# one of them (docs/testing.md). Every run prints its slowest tests.
# PYTEST_PARALLEL=--durations=25 runs them in one process.
PYTEST_PARALLEL ?= -n 3 --dist loadgroup --durations=25

# The whole suite on Kilted, then the tests marked `ros` on Jazzy (.ci/run sets up Jazzy's side
# while the first runs).
test: test-kilted test-jazzy

test-kilted: $(STAMP) $(ONNX_STAMP) tf2-kilted
	$(MAKE) ort-wrappers || echo "ONNX Runtime's older wrappers not downloaded: their tests skip"
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) $(TF2) run -- $(PY) -m pytest -ra test $(PYTEST_PARALLEL) $(TEST_ARGS)

test-jazzy: $(JAZZY_STAMP) tf2-jazzy
	$(JAZZY) $(TF2) run -- $(JAZZY_VENV)/bin/python -m pytest -ra test --ros-only \
	    $(PYTEST_PARALLEL) $(TEST_ARGS)

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
	rm -rf $(VENV) $(ONNX_VENV) $(JAZZY_VENV) $(ORT_WRAPPERS) .tf2 build install log demo_out *.egg-info
