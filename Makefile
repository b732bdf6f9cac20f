# Two commands do all the set-up on a fresh machine:  `make reproduce` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU-usable torch that this project's machines carry on disk (PyPI's torchvision needs a matching torch).
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup reproduce test figures audit clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

reproduce: setup          ## the main job: every notebook at smoke size -> reproduction/REPORT.md
	$(BIN)/lab reproduce --protocol smoke --out reproduction

test: setup              ## a process per core, at most 4: past that the longest tests bound the time (pytest-xdist)
	$(BIN)/python -m pytest -n auto --maxprocesses 4

figures: setup
	$(BIN)/lab figures --out figures

audit: setup
	$(BIN)/lab audit

clean:
	rm -rf reproduction results .pytest_cache
