# The course in two commands:  make demo  (the main job, on mini-IRMAS)  and  make test  (everything).
# Both bootstrap themselves: a .venv with the project and the extras they need, and the FluidSynth library.
# `make` alone (or `make help`) lists every target.

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
MINI   := data/mini_irmas
CACHE  := data/mini_irmas_features
RUNS   := runs

# The extras each target installs beside the library (pyproject.toml: course, test, panns, synth; dev
# is all four), joined with "+". `make env` installs EXTRAS: `make env EXTRAS=course+synth`.
EXTRAS       ?= synth
DEMO_EXTRAS  := synth
TEST_EXTRAS  := dev
LAB_EXTRAS   := course+panns+synth
BENCH_EXTRAS := panns+synth+test

# Where PyTorch comes from. Empty (the default): PyPI, whose Linux x86-64 wheels carry CUDA (about
# 6 GB of the venv). With PyTorch's own CPU index, e.g.
#   make demo TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# torch and torchaudio (the versions pyproject.toml pins) are installed from there first, then the rest
# from PyPI. It applies when .venv is created: `make clean-venv` first to switch an existing one.
TORCH_INDEX_URL ?=
TORCH_PINS = $$(grep -oE '"torch(audio)?==[^"]+"' pyproject.toml | tr -d '"')

# bash with pipefail, so a command piped through a filter still fails the target when it fails
SHELL       := /bin/bash
.SHELLFLAGS := -eo pipefail -c

export PYTHONUNBUFFERED := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

comma := ,
installed = $(VENV)/.installed-$(1)

.DEFAULT_GOAL := help
.PHONY: help demo test unit nbval notebooks lab bench env fluidsynth chromium mini clean clean-venv

# One step at a time even under `make -j`: the steps share the venv, data/ and runs/ (the unit tests and
# the notebooks both run notebook 07), and each already uses both cores itself (pytest-xdist, render workers).
.NOTPARALLEL:

help: ## list the targets (this text)
	@echo "make TARGET [EXTRAS=...] [TORCH_INDEX_URL=...]    (each target installs what it needs into $(VENV))"
	@echo
	@awk -F':.*## ' '/^[a-z][a-z-]*:.*## / { printf "  %-12s %s\n", $$1, $$2 }' $(firstword $(MAKEFILE_LIST))
	@echo
	@echo "  EXTRAS=$(EXTRAS)  (make env)   TORCH_INDEX_URL=$(if $(TORCH_INDEX_URL),$(TORCH_INDEX_URL),PyPI)"

env: $(call installed,$(EXTRAS)) fluidsynth ## create .venv with irmas_lib and EXTRAS (default synth), and FluidSynth

# Packages go in with uv (astral-sh/uv, from PyPI into the venv), which downloads and unpacks wheels in
# parallel: `make demo`'s packages took 97 s against pip's 216 s in one session on a 2-core AMD EPYC, the
# same versions of every package (issue 9's note). --compile-bytecode writes the .pyc files at install
# time, as pip does (45 to 66 s without it): without them, where PYTHONDONTWRITEBYTECODE is set (the
# course's development machines set it), every process compiles torch and friends again (imports 20 s, not 8).
# uv keeps its own cache (~/.cache/uv; UV_NO_CACHE=1 to go without). It reads no pip.conf, but is given
# PIP_INDEX_URL and PIP_EXTRA_INDEX_URL when they are set. Where uv could not be installed, or cannot
# install something, pip installs it instead.
UV_SPEC := uv>=0.5$(comma)<1
ifdef PIP_INDEX_URL
export UV_INDEX_URL ?= $(PIP_INDEX_URL)
endif
ifdef PIP_EXTRA_INDEX_URL
export UV_EXTRA_INDEX_URL ?= $(PIP_EXTRA_INDEX_URL)
endif
pip_install = $(BIN)/pip install -q $(1) 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
install = if test -x $(BIN)/uv; then $(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python $(1) || \
	{ echo "== uv could not install $(1): pip tries =="; $(call pip_install,$(1)); }; else $(call pip_install,$(1)); fi
install_uv = $(call pip_install,'$(UV_SPEC)') || echo "== uv could not be installed: pip installs the packages =="

# A venv whose PyTorch could not come from TORCH_INDEX_URL is removed, so that the next run tries again
# instead of taking PyPI's.
$(BIN)/python:
	@echo "== Creating $(VENV) ($(if $(TORCH_INDEX_URL),PyTorch from $(TORCH_INDEX_URL),PyTorch from PyPI)) =="
	@bash .ci/ensure_venv_module.sh $(PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(install_uv)
	$(if $(TORCH_INDEX_URL),$(call install,--index-url "$(TORCH_INDEX_URL)" $(TORCH_PINS)) || { rm -rf $(VENV); exit 1; })

# A venv made before uv joined the Makefile gets it here (a new one has it already).
$(BIN)/uv: | $(BIN)/python
	@test -x $@ || { $(install_uv); }

# One stamp per set of extras: `make demo` then `make test` installs only what test adds.
$(VENV)/.installed-%: pyproject.toml | $(BIN)/uv
	@echo "== Installing irmas_lib[$(subst +,$(comma),$*)] into $(VENV) (a minute or two the first time with uv) =="
	$(call install,-e '.[$(subst +,$(comma),$*)]')
	$(BIN)/python -c "import irmas_lib, torch, torchaudio, pytorch_lightning, jsonargparse"
	touch $@

fluidsynth: ## install the FluidSynth library and the FluidR3_GM sample library (apt-get) when missing
	@bash .ci/ensure_fluidsynth.sh $(BIN)/python

# Debian's Chromium for tests/test_browser_demo.py (Playwright drives it; it never downloads a browser).
chromium: ## install Chromium (apt-get) when missing, for the browser test of notebook 07's demo
	@bash .ci/ensure_chromium.sh

# Renders mini-IRMAS when it is missing or was rendered with other settings or an older renderer
# (`irmas synth` says "up to date" and does nothing otherwise): a phony target, so it always asks.
mini: $(call installed,$(DEMO_EXTRAS)) fluidsynth ## render mini-IRMAS into data/mini_irmas (nothing to do when up to date)
	$(BIN)/irmas synth $(MINI) --overwrite

# The main job on mini-IRMAS: render it, count it, cache its features, train the basic CNN (validation
# metrics printed beside two baselines), then evaluate the best checkpoint on the test excerpts.
demo: $(call installed,$(DEMO_EXTRAS)) fluidsynth mini ## the main job: render mini-IRMAS, train the basic CNN, evaluate it
	$(BIN)/irmas info $(MINI)
	$(BIN)/irmas preprocess --in_dir $(MINI) --out_dir $(CACHE) --config configs/default.yaml
	$(BIN)/irmas fit --config configs/default.yaml --quiet true --trainer.logger.init_args.name demo
	$(BIN)/irmas evaluate "$$(ls -td $(RUNS)/demo/version_*/checkpoints | head -1)/best.ckpt" $(MINI) \
		--threshold tuned --json $(RUNS)/demo/evaluation.json

test: unit nbval ## every unit test, then every notebook under strict nbval (what CI runs)

# One pytest worker per core (pytest-xdist; a test file stays on one worker, so its fixtures are built
# once), each with one torch thread. Files go out in collection order (--no-loadscope-reorder), which
# tests/conftest.py starts with the longest: the browser test of notebook 07, which trains the course model.
unit: $(call installed,$(TEST_EXTRAS)) fluidsynth chromium ## the unit tests (pytest tests), notebook 07's demo in Chromium among them
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder tests

# Every notebook under strict nbval in CI's reduced setting (IRMAS_QUICK=1), two at a time (two pytest-xdist
# workers, one torch thread each; --dist loadfile keeps a notebook's cells in one kernel, in order). The data
# the notebooks read (mini-IRMAS, or $IRMAS_ROOT) and its feature cache are made first, through the
# function the notebooks call, so that no two notebooks make them at once (nothing to do when up to date;
# beside $IRMAS_ROOT, notebook 04 alone makes mini-IRMAS). 06 and 07 share the notebooks' trained model:
# when they run side by side, the first to ask trains it while the other waits (a file lock).
nbval: $(call installed,$(TEST_EXTRAS)) fluidsynth ## every notebook under strict nbval, reduced (IRMAS_QUICK=1)
	IRMAS_QUICK=1 $(BIN)/python -c "from irmas_lib.course import data_root, feature_cache; feature_cache(data_root())"
	IRMAS_QUICK=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile \
		--nbval --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg notebooks

# The committed outputs: every notebook executed in place, in order, top to bottom, in the full setting a
# learner gets with `make lab`: every IRMAS_* knob unset (IRMAS_QUICK, IRMAS_ROOT: mini-IRMAS,
# IRMAS_EPOCHS, IRMAS_CHECKPOINT, ...), so the defaults the Settings cells show are the ones that ran;
# about 40 minutes on 2 cores (73 on the slowest machine type so far, 2026-12-07). Each notebook is
# stripped of execution timestamps and other volatile metadata (.ci/clean_notebooks.py) as soon as it
# has run, so an interrupted run leaves clean files.
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
notebooks: $(call installed,$(LAB_EXTRAS)) fluidsynth mini ## execute every notebook in place in the full setting (40 to 75 min), for committing
	for knob in $$(compgen -e | grep '^IRMAS_' || true); do unset "$$knob"; done; \
	for notebook in $(NOTEBOOKS); do \
		echo "== $$notebook =="; \
		$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
			--ExecutePreprocessor.timeout=-1 --ExecutePreprocessor.kernel_name=python3 "$$notebook"; \
		$(BIN)/python .ci/clean_notebooks.py "$$notebook"; \
	done

lab: $(call installed,$(LAB_EXTRAS)) fluidsynth mini ## open the course's notebooks in JupyterLab
	$(BIN)/jupyter lab notebooks

# Speed and memory figures beside their references (printed, not asserted); about 17 minutes on 2 cores
# on 2026-12-06, when bench_synth took 2 min 10 s of it; since it renders the default tree four times
# (renderer 3 against 4), bench_synth alone takes about 6 minutes on the slowest machine so far.
# bench_evaluate times the newest checkpoint under runs/ (run `make demo` first); --help for options.
bench: $(call installed,$(BENCH_EXTRAS)) fluidsynth mini ## every benchmark (about 17 min on 2 cores)
	$(BIN)/python benchmarks/bench_synth.py
	$(BIN)/python benchmarks/bench_features.py --root $(MINI)
	$(BIN)/python benchmarks/bench_training.py --root $(MINI) --cache $(CACHE)
	$(BIN)/python benchmarks/bench_panns.py --cache $(CACHE)
	$(BIN)/python benchmarks/bench_evaluate.py --test-dir $(MINI)

clean: ## remove what the demo and the tests made (runs/, mini-IRMAS, its cache)
	rm -rf $(RUNS) $(CACHE) $(MINI) .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

clean-venv: ## remove .venv (the next target creates it again)
	rm -rf $(VENV)
