# pianolab: `make book` and `make test` set up everything on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pianolab-installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: all setup system-deps corpus test test-unit test-notebooks test-browser book benchmarks clean

all: test

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,book]'
	@touch $(STAMP)

# Debian packages: FluidSynth renders piano sound (without it pianolab falls back to a numpy
# synthesiser); Chromium runs the browser test (without it that test skips and says so).
DEBS := libfluidsynth3 chromium chromium-driver
system-deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian packages:$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	    || echo "note: could not install$$missing; audio falls back to numpy, the browser test skips"; \
	else echo "note: missing$$missing and not root; audio falls back to numpy, the browser test skips"; fi

setup: $(STAMP) system-deps

# Builds the default corpus (music21's Bach chorales and keyboard works) unless it is cached.
corpus: setup
	$(PY) -m pianolab data

JB := $(VENV)/bin/jupyter-book build . --all --path-output . -W --keep-going
NBVAL := $(PY) -m pytest --nbval-lax --nbval-cell-timeout=900 -p no:cacheprovider

test-unit: corpus
	$(PY) -m pytest tests -q --ignore=tests/test_browser.py

test-notebooks: corpus
	PIANOLAB_QUICK=1 $(NBVAL) book -q

# The book as CI builds it (quick chapters), then opened in headless Chromium.
test-browser: corpus
	PIANOLAB_QUICK=1 $(JB)
	$(PY) -m pytest tests/test_browser.py -q

test: corpus
	$(PY) -m pytest tests -q --ignore=tests/test_browser.py
	PIANOLAB_QUICK=1 $(NBVAL) book -q
	PIANOLAB_QUICK=1 $(JB)
	$(PY) -m pytest tests/test_browser.py -q

# The full book: every chapter executed in full (shipped models make that fit in minutes).
book: corpus
	$(JB)

benchmarks: corpus
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/generation.py
	$(PY) benchmarks/jsb.py
	$(PY) benchmarks/robustness.py

clean:
	rm -rf _build
