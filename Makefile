# Two commands do all set-up on a fresh machine (Python 3.11 with venv):
#   make demo   synthetic 28-participant cohort -> whole pipeline -> tables + accuracy
#   make test   the whole test suite (unit + end-to-end Snakemake run)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint segmenter

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/spineflow-dev demo --dir demo --participants $(or $(PARTICIPANTS),28)

# two workers: the end-to-end tests on the tiny cohort in one, the unit tests in the other
test: $(STAMP)
	$(BIN)/python -m pytest -ra -n 2 --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules

# Retrain the learned segmentation (spineflow/data/spine_unet.npz) from scratch: 1400 synthetic
# training pairs, then 12 epochs; about 30 min on two idle cores. PyTorch (CPU) only here, in a
# venv of its own: spineflow itself runs the network in numpy.
TRAIN_VENV := .venv-train
PAIRS_DIR := training/pairs
segmenter:
	$(PYTHON) -m venv $(TRAIN_VENV)
	$(TRAIN_VENV)/bin/python -m pip install --quiet numpy==2.4.6 scipy==1.17.1 torch==2.13.0
	mkdir -p $(PAIRS_DIR)
	seq 0 100 1300 | xargs -P 2 -I{} env PYTHONPATH=. $(TRAIN_VENV)/bin/python \
		training/generate.py $(PAIRS_DIR)/pairs_{}.npz {} 100
	PYTHONPATH=. $(TRAIN_VENV)/bin/python training/train.py spineflow/data/spine_unet.npz 12 \
		$(PAIRS_DIR)/pairs_*.npz
