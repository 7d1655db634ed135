# Set-up and the two main jobs. `make demo` and `make test` create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
# A CPU build of torch; override (e.g. TORCH_SPEC="torch>=2.4") on machines with a GPU.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint clean

$(STAMP): pyproject.toml requirements-embedded.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,baselines]"
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-embedded.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cguard demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

test: $(STAMP) lint
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m "not real"

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
