# One command each: `make demo` (set up + run the demo), `make test` (set up + run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch. Installed first, so that no later requirement ("torch>=2.1") pulls the
# multi-GB CUDA build. Elsewhere: `make test TORCH=torch` takes whatever pip picks.
TORCH ?= torch==2.13.0

.PHONY: setup demo test lint docs bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/mixstream demo --workdir demo_out --threads 1

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: setup
	$(BIN)/ruff check mixstream tests benchmarks tools
	$(BIN)/mypy

# The API reference from the docstrings (pdoc) into docs/api/ (not committed); fails on a pdoc
# warning or a dangling docstring reference, as tests/test_api_docs.py does in `make test`.
docs: setup
	$(BIN)/python tools/api_docs.py docs/api

bench: setup
	bash benchmarks/run_all.sh

clean:
	rm -rf $(VENV) demo_out build *.egg-info
