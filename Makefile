# deepshrink: set-up, demo and tests. `make demo` and `make test` work from a clean clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch and torchvision pinned together: this pair installs from the local wheel cache here
# and imports together (a CPU-only torch 2.13 cannot import torchvision beside it).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/deepshrink demo

test: $(STAMP)
	$(BIN)/python -m pytest -q --doctest-modules src/deepshrink tests

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
