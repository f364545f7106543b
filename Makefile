# Thin aliases. `make quickstart` and `make test` work on a fresh machine (they create .venv).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU wheel of torch pinned on the CPU install path (an unpinned torch pulls a multi-GB CUDA build).
TORCH_CPU ?= torch==2.13.0

.PHONY: install quickstart test test-ops test-all test-gpu lint format clean

$(BIN)/activate:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/python -m pip install -q $(TORCH_CPU)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(BIN)/rails-train experiment=quickstart

lint: install
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

test: install lint
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline $(BIN)/python -m pytest -m "not gpu and not slow" -q

# Multi-process operations checks (SIGKILL + resume, 1 vs 2 gloo processes incl. the sharded evaluator, sweeps incl. Optuna and the parallel launcher): CI runs them too.
test-ops: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline $(BIN)/python -m pytest -m slow -q tests/test_resume.py tests/test_ddp.py tests/test_sweeps.py \
		tests/test_parallel_launcher.py tests/test_retrieval_sharded.py tests/test_mol_scripts.py tests/test_retrieval_fused.py \
		tests/test_bench_ddp.py tests/test_mol_topk_kernel.py

test-all: install lint
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline $(BIN)/python -m pytest -m "not gpu" -q

# GPU suite on a CUDA machine (fused Triton kernels vs float64 references, bf16 steps; <= 3 min on H100/H200).
# Refuses to run without a CUDA device instead of skipping everything. Without internet: docs/operations.md.
test-gpu: install
	@$(BIN)/python -c "import sys, torch; torch.cuda.is_available() or sys.exit('test-gpu: torch sees no CUDA')"
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline $(BIN)/python -m pytest -m gpu -q --durations=10

format: install
	$(BIN)/ruff format src tests scripts
	$(BIN)/ruff check --fix src tests scripts

clean:
	rm -rf $(VENV) logs .pytest_cache
