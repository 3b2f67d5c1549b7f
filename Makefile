# The two commands of the quick start: `make demo` and `make test`.
# Both create .venv and install zoo into it on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export JAX_PLATFORMS ?= cpu

.PHONY: demo test install lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,tpu,tfds-catalog]'
	touch $(STAMP)

install: $(STAMP)

# The main job on an embedded default: until the model families land, the smoke
# recipe (a small Transformer learns to reverse sequences, from generated data).
demo: $(STAMP)
	$(VENV)/bin/zoo train --config recipes/smoke.py:demo --workdir runs/smoke_demo \
	  --config.task.data_dir=runs/tfds

test: $(STAMP)
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check zoo tests recipes benchmarks

bench: $(STAMP)
	$(PY) benchmarks/smoke_cpu.py

clean:
	rm -rf runs
