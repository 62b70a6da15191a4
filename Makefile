# Two entry points, both self-contained: they create .venv on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[compiler,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/make_example.py examples/bottlenet.onnx
	rm -rf examples/out
	$(BIN)/splitc compile examples/bottlenet.onnx --target rpi4,cloud --link 4g -o examples/out
	$(BIN)/splitc run examples/out

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) examples/out examples/*.onnx .pytest_cache
