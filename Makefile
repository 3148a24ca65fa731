# Two commands do all the set-up: `make demo` and `make test`. Both create .venv when it is missing.
# `make test-fast` is the edit loop: the suite without the slow, Docker and vLLM tests (a few minutes).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fineclip-installed
DEMO   ?= demo
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test test-fast lint smoke clean-demo

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[pipeline,describe,trainer,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m fineprep.demo --out $(DEMO)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -q

test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -q -m "not slow and not docker and not vllm"

lint: $(STAMP)
	$(BIN)/ruff check .

# The images built and the compose stack run end to end (deploy/smoke.sh; root or a running Docker daemon).
smoke: $(STAMP)
	FINECLIP_DOCKER_SMOKE=1 $(BIN)/pytest -q -s -m docker tests/test_docker_smoke.py

clean-demo:
	rm -rf $(DEMO)
