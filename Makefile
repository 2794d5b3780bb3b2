# Two commands do all set-up on a fresh machine:
#   make demo   - the main job (a quick study on the bundled data)
#   make test   - the test suite
# Both create .venv in the repo root (torch==2.13.0 first, a CPU wheel; then the
# package with its test extras) and are idempotent.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mfbo-installed

.PHONY: install demo test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/mfbo run studies/quickstart.toml --resume

test: install
	$(BIN)/ruff check mfbo tests analysis
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check mfbo tests analysis

clean:
	rm -rf $(VENV) out .pytest_cache
