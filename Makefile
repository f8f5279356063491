# Both targets set up everything they need in .venv from constraints.txt (tested versions).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EDGEQ := $(VENV)/bin/edgeq
RUFF := $(VENV)/bin/ruff
DEMO := out/demo

.PHONY: demo test venv clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[torch,dev,cluster]'
	touch $@

venv: $(VENV)/.installed

# The main job on the bundled reference model and its bundled data.
demo: $(VENV)/.installed
	$(EDGEQ) export-and-quantize digits_mobilenet -o $(DEMO)/digits_mobilenet.int8.onnx \
	  --fp32-out $(DEMO)/digits_mobilenet.fp32.onnx --report $(DEMO)/report.json
	$(EDGEQ) bench $(DEMO)/digits_mobilenet.fp32.onnx $(DEMO)/digits_mobilenet.int8.onnx \
	  --threads 1 --batch 1,8 --json $(DEMO)/bench.json

# Lint (pyproject.toml [tool.ruff]) first, then the tests; tests/test_layers.py is the import contract.
test: $(VENV)/.installed
	$(RUFF) check edgeq tests bench
	$(PY) -m pytest -n 2 -q

clean:
	rm -rf $(VENV) out
