# The course in two commands:  make demo  (the main job, on mini-IRMAS)  and  make test  (everything).
# Both bootstrap themselves: a .venv with the project and its dev extras, and the FluidSynth library.

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MINI   := data/mini_irmas
CACHE  := data/mini_irmas_features
RUNS   := runs

# bash with pipefail, so a command piped through a filter still fails the target when it fails
SHELL       := /bin/bash
.SHELLFLAGS := -eo pipefail -c

export PYTHONUNBUFFERED := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test unit notebooks lab clean env fluidsynth bench

env: $(STAMP) fluidsynth

$(STAMP): pyproject.toml
	@echo "== Creating $(VENV) and installing irmas_lib with its dev extras (a few minutes the first time) =="
	@bash .ci/ensure_venv_module.sh $(PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]' 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
	$(BIN)/python -c "import irmas_lib, torch, torchaudio, pytorch_lightning" 
	touch $(STAMP)

fluidsynth:
	@bash .ci/ensure_fluidsynth.sh $(BIN)/python

$(MINI)/.complete: | env
	$(BIN)/irmas synth $(MINI) --overwrite

# The main job on mini-IRMAS: render it, count it, cache its features, train the basic CNN (validation
# metrics printed beside two baselines), then evaluate the best checkpoint on the test excerpts.
demo: env $(MINI)/.complete
	$(BIN)/irmas info $(MINI)
	$(BIN)/irmas preprocess --in_dir $(MINI) --out_dir $(CACHE) --config configs/default.yaml
	$(BIN)/irmas train --config configs/default.yaml --quiet true --trainer.logger.init_args.name demo
	$(BIN)/irmas evaluate "$$(ls -td $(RUNS)/demo/version_*/checkpoints | head -1)/best.ckpt" $(MINI) \
		--threshold tuned --json $(RUNS)/demo/evaluation.json

# Unit tests, then every notebook under strict nbval in CI's reduced setting (IRMAS_QUICK=1).
test: env
	$(BIN)/python -m pytest -q tests
	IRMAS_QUICK=1 $(BIN)/python -m pytest -q --nbval --nbval-current-env \
		--nbval-sanitize-with notebooks/nbval_sanitize.cfg notebooks

lab: env $(MINI)/.complete
	$(BIN)/jupyter lab notebooks

# Speed and memory figures beside their references (printed, not asserted); about 15 minutes on 2 cores.
# bench_evaluate times the newest checkpoint under runs/ (run `make demo` first); --help for options.
bench: env $(MINI)/.complete
	$(BIN)/python benchmarks/bench_features.py --root $(MINI)
	$(BIN)/python benchmarks/bench_training.py --root $(MINI) --cache $(CACHE)
	$(BIN)/python benchmarks/bench_panns.py --cache $(CACHE)
	$(BIN)/python benchmarks/bench_evaluate.py --test-dir $(MINI)

clean:
	rm -rf $(RUNS) $(CACHE) $(MINI) .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
