# Two commands do all set-up on a fresh machine (Python 3.11 with venv):
#   make demo   synthetic 28-participant cohort -> whole pipeline -> tables + accuracy
#   make test   the whole test suite (unit + end-to-end Snakemake run)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/spineflow demo --dir demo --participants $(or $(PARTICIPANTS),28)

test: $(STAMP)
	$(BIN)/python -m pytest -ra

lint: $(STAMP)
	$(BIN)/ruff check spineflow scripts tests
	$(BIN)/snakefmt --check Snakefile rules
