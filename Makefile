# rmserve: `make serve` and `make test` work from a fresh clone (they create .venv themselves).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000

.PHONY: serve test test-slow model bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# One stamp per extra: editing pyproject.toml reinstalls.
$(VENV)/.installed-serve: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed-serve

serve: $(VENV)/.installed-serve
	$(BIN)/rmserve serve --port $(PORT)

test: $(VENV)/.installed-dev
	$(BIN)/pytest -q -m "not slow"

# Load, container and real-Prometheus tests; .ci/run runs them after `make test`.
test-slow: $(VENV)/.installed-dev
	$(BIN)/pytest -q -m slow

model: $(VENV)/.installed-dev
	@echo "see models/README in the training issue" && false

bench: $(VENV)/.installed-dev
	$(BIN)/rmserve bench

clean:
	rm -rf $(VENV) .pytest_cache
