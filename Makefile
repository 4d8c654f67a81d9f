# ASR Compression Lab. A new user types `make demo` or `make test`; both set everything up first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# chromium: the explorer's real-browser test (driven by pip playwright, never `playwright install`)
APT_PACKAGES := espeak-ng flite sox libsndfile1 chromium
UI_PORT ?= 8501
export ASRLAB_HOME ?= $(CURDIR)/lab
DEMO_DIR := $(ASRLAB_HOME)/corpora/demo

.PHONY: setup apt venv demo demo-train test bench ui clean

setup: apt venv

# Debian packages the corpus synthesizer and audio I/O need; `apt-get update` once, only if one is missing.
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages:$$missing"; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11) on PATH"; exit 1; }
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

# The demo corpus lives where `builtin:demo` resolves, so the experiment reuses it. The demo is
# the compression study of experiments/demo.toml; --reuse makes a second `make demo` take every
# finished stage from the first (under a minute). It ends with the compression table and the
# explorer's links for the run.
demo: setup
	@start=$$(date +%s); \
	$(BIN)/asrlab corpus synth --size demo --out $(DEMO_DIR) && \
	$(BIN)/asrlab corpus info $(DEMO_DIR) && \
	$(BIN)/asrlab run experiments/demo.toml --reuse --wait && \
	$(BIN)/asrlab ui --background --port $(UI_PORT) && \
	$(BIN)/asrlab summary --name demo && \
	echo "make demo: $$(( ($$(date +%s) - start) / 60 )) min $$(( ($$(date +%s) - start) % 60 )) s after set-up"

# One model only, for people who want to see training: experiments/quickstart.toml.
demo-train: setup
	$(BIN)/asrlab corpus synth --size demo --out $(DEMO_DIR)
	$(BIN)/asrlab run experiments/quickstart.toml --reuse --wait
	$(BIN)/asrlab results
	@$(BIN)/asrlab ui --background --port $(UI_PORT)

# test files spread over TEST_WORKERS processes, each file whole in one (its fixtures built once)
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

bench: setup
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_train.py --corpus $(DEMO_DIR)
	$(BIN)/python benchmarks/bench_loss.py
	$(BIN)/python benchmarks/bench_engine.py
	$(BIN)/python benchmarks/bench_explorer.py

ui: setup
	$(BIN)/asrlab ui --port $(UI_PORT)

clean:
	-$(BIN)/asrlab ui --stop 2>/dev/null
	rm -rf $(VENV) lab data .pytest_cache
