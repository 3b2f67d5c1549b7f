# The two commands of the quick start: `make demo` and `make test`.
# Both create .venv and install zoo into it on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export JAX_PLATFORMS ?= cpu

.PHONY: demo demo-smoke test install lint bench compile-table clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,tpu,tfds-catalog,denovo]'
	touch $(STAMP)

install: $(STAMP)

# The main jobs on embedded defaults: the mBART demo on the gettext en->de catalogs of
# this machine (sentencepiece, translation-only vs CSR-then-translation, BLEU/chrF), then
# ZeTT (a hypernetwork moves that model to a German-only tokenizer; vs FVT and lexical), then
# the de novo peptide demo on simulated spectra (AR vs NAR vs hybrid, mzTab, annotated PNG).
# Rerunning reuses the finished stages in runs/.
demo: $(STAMP)
	$(PY) recipes/mbart_demo.py --workdir runs/mbart_demo
	$(PY) recipes/zett_demo.py --workdir runs/zett_demo --base runs/mbart_demo/translation
	$(PY) recipes/denovo_demo.py --workdir runs/denovo_demo

# The core loop's smallest job: a Transformer learns to reverse sequences (~2 minutes).
demo-smoke: $(STAMP)
	$(VENV)/bin/zoo train --config recipes/smoke.py:demo --workdir runs/smoke_demo \
	  --config.task.data_dir=runs/tfds

# Two workers (one per core here): compiles are single-threaded, so they overlap well.
# --dist loadfile keeps a file's module fixtures (e.g. one trained run) in one worker.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15 tests

lint: $(STAMP)
	$(VENV)/bin/ruff check zoo tests recipes benchmarks

bench: $(STAMP)
	$(PY) benchmarks/smoke_cpu.py

# tpu/COMPILE_TABLE.md: every full recipe AOT-compiled for v5e-8, v4-8, v5p-8 (libtpu, no TPU;
# about 10 minutes a cell on 2 cores, cached in runs/compile_table/).
compile-table: $(STAMP)
	$(PY) benchmarks/compile_table.py

clean:
	rm -rf runs
