# Two entry points, both self-contained: they create .venv on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test bench bench-update clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[compiler,test,tvm,image,serve,ans,ray]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/make_example.py examples/bottlenet.onnx
	rm -rf examples/out
	$(BIN)/splitc compile examples/bottlenet.onnx --target rpi4,cloud --link 4g -o examples/out
	$(BIN)/splitc run examples/out

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# partition quality over the whole suite, gated on the committed baseline (CI runs it after the tests)
bench: $(STAMP)
	$(BIN)/splitc bench --check benchmarks/baseline.json -o out/bench

# accept the current plans as the baseline (commit benchmarks/baseline.json with the change that moved them)
bench-update: $(STAMP)
	$(BIN)/splitc bench --update benchmarks/baseline.json -o out/bench

clean:
	rm -rf $(VENV) examples/out examples/*.onnx .pytest_cache out/bench
