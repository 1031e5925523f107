# pianolab: `make book` and `make test` set up everything on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pianolab-installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export TF_CPP_MIN_LOG_LEVEL := 2

# A CPU without AVX-512 (most laptops, many cloud machines), as this machine can run it: TensorFlow
# with oneDNN off (its default there) and oneDNN/XLA capped at AVX2 (for readers who force oneDNN on),
# numba compiling for Haswell, numpy and OpenBLAS dispatching no AVX-512 kernel. tests/test_cpu.py
# proves each library took that path. `make test` runs the unit tests once more this way;
# `make test CPU=avx2` or `make book CPU=avx2` runs everything so.
AVX2_ENV := PIANOLAB_CPU=avx2 TF_ENABLE_ONEDNN_OPTS=0 ONEDNN_MAX_CPU_ISA=AVX2 DNNL_MAX_CPU_ISA=AVX2 \
	XLA_FLAGS=--xla_cpu_max_isa=AVX2 OPENBLAS_CORETYPE=Haswell NUMBA_CPU_NAME=haswell \
	NUMBA_CPU_FEATURES=+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+cx8,+f16c,+fma,+fxsr,+lzcnt,+mmx,+movbe,+popcnt,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave \
	NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL"
ifeq ($(CPU),avx2)
AS_CPU := env $(AVX2_ENV)
else ifneq ($(CPU),)
$(error CPU=$(CPU): the one CPU this Makefile can emulate is CPU=avx2)
endif

.PHONY: all setup system-deps corpus test test-unit test-unit-avx2 test-notebooks test-browser book lab installer-cells \
	benchmarks clean

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
	$(AS_CPU) $(PY) -m pianolab data

JB := $(AS_CPU) $(VENV)/bin/jupyter-book build . --all --path-output . -W --keep-going
NBVAL := $(AS_CPU) $(PY) -m pytest --nbval-lax --nbval-cell-timeout=900 -p no:cacheprovider
# Where nbval leaves the chapters it executed, with their outputs (book/conftest.py).
EXECUTED := _build/executed

test: test-unit test-unit-avx2 test-notebooks test-browser

test-unit: corpus
	$(AS_CPU) $(PY) -m pytest tests -q --ignore=tests/test_browser.py

# The unit tests again, as a CPU without AVX-512 runs them (their tolerances hold on both paths).
test-unit-avx2: corpus
	$(if $(AS_CPU),@echo "test-unit already ran as CPU=avx2",env $(AVX2_ENV) $(PY) -m pytest tests -q --ignore=tests/test_browser.py)

# Every chapter executed once, in quick mode.
test-notebooks: corpus
	rm -rf $(EXECUTED)
	PIANOLAB_QUICK=1 $(NBVAL) book -q --executed-into $(EXECUTED)

# The quick book rendered from those notebooks (nothing is executed again; book/_ext explains),
# then every page opened in headless Chromium.
test-browser: test-notebooks
	PIANOLAB_EXECUTED=$(EXECUTED) $(JB)
	$(AS_CPU) $(PY) -m pytest tests/test_browser.py -q

# The full book: every chapter executed in full (shipped models make that fit in minutes).
book: corpus
	$(JB)

# JupyterLab (the `lab` extra) on the chapters, after the same set-up as the other targets.
$(VENV)/.pianolab-lab: $(STAMP)
	$(PY) -m pip install -q -e '.[test,book,lab]'
	@touch $@

lab: corpus $(VENV)/.pianolab-lab
	$(VENV)/bin/jupyter lab book/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

# After changing `repository` in _config.yml: write it into every chapter's installer cell.
installer-cells: setup
	$(PY) book/_ext/installer_cell.py

benchmarks: corpus
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/generation.py
	$(PY) benchmarks/polyphonic.py
	$(PY) benchmarks/robustness.py

clean:
	rm -rf _build
