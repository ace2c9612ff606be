# The README's commands. Each sets up its own virtual environment first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench clean

$(STAMP): requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# Main job: the ROS 2 pipeline on the built-in scenes (needs the CLIP RN50 weights; see README).
demo: $(STAMP)
	$(VENV)/bin/depthclip-demo --out demo_out $(DEMO_ARGS)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -ra test $(TEST_ARGS)

bench: $(STAMP)
	$(PY) bench/benchmark.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build install log demo_out *.egg-info
