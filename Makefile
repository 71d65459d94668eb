# The README's quick start: two lines do everything, each idempotent (a second run skips what is
# installed; extraction resumes and skips files already embedded).
#
#   make extract   set up what the main job needs, then embed AUDIO (default examples/audio/)
#                  into OUT (default embeddings/) with the packaged offline model
#   make test      set up what the tests need (system tools, every extra), then lint and test
#   make test-core the core alone on the newer torch line (constraints-torch213.txt: no torchaudio,
#                  no extra) in its own virtualenv CORE_VENV: the main job, then the test suite
#                  (the tests that need an extra or torchaudio skip, saying why)
#   make test-avx2 the precision and extraction tests once more with the kernels capped to AVX2
#                  and the CPU flags overridden (the class of most AMD and older Intel CPUs)
#   make test-suites  X-ARES, MAEB (mteb), hear-eval-kit and s3prl together in their own
#                  virtualenv SUITES_VENV, then the tests marked `suites` and `slow` of the suite
#                  consumers and `bench` (not in CI: long, and the suites' dependencies are heavy)
#
# Everything goes into the active virtualenv, or into ./.venv (created) when none is active.

PYTHON ?= python3
VENV ?= $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),.venv)
AUDIO ?= examples/audio
OUT ?= embeddings
PIP := $(VENV)/bin/python -m pip install -q -c constraints.txt
CORE_VENV ?= .venv-core
SUITES_VENV ?= .venv-suites
CORE_TORCH := $(shell sed -n 's/^torch==//p' constraints-torch213.txt)
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_ROOT_USER_ACTION := ignore

# oneDNN, ATen, FBGEMM and MKL capped to AVX2 before torch starts; MAEAST_CPU_FLAGS hides the rest
AVX2_CAPS := ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 \
	MKL_ENABLE_INSTRUCTIONS=AVX2 MAEAST_CPU_FLAGS="avx avx2 fma f16c"

.PHONY: extract test test-core test-avx2 test-suites
extract: $(VENV)/.maeast-core
	$(VENV)/bin/maeast-embed extract $(AUDIO) -o $(OUT)

test: $(VENV)/.maeast-all system-tools
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# the core (what `extract` needs); redone when the package metadata or the pins change
$(VENV)/.maeast-core: setup.cfg pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) -e .
	touch $@

# every extra, and hear-eval-kit (installed without its dependencies: it pins numpy 1.19.2)
$(VENV)/.maeast-all: $(VENV)/.maeast-core
	$(PIP) -e ".[all]"
	$(PIP) --no-deps heareval==2021.1.3 hearvalidator==2021.0.2
	touch $@

test-avx2: $(VENV)/.maeast-all system-tools
	$(AVX2_CAPS) $(VENV)/bin/python -m pytest -q tests/test_precision.py tests/test_features.py \
	  tests/test_extract.py tests/test_extract_scale.py tests/test_extract_inputs.py

test-core: $(CORE_VENV)/.maeast-core system-tools
	rm -rf $(CORE_VENV)/embeddings
	$(CORE_VENV)/bin/maeast-embed extract $(AUDIO) -o $(CORE_VENV)/embeddings --quiet
	$(CORE_VENV)/bin/python -m pytest -q -rs

$(CORE_VENV)/bin/python:
	$(PYTHON) -m venv $(CORE_VENV)

# as a user would: a virtualenv already holding the newer torch, then the package with no
# constraints; it must keep that torch (no downgrade) and bring no torchaudio
$(CORE_VENV)/.maeast-core: setup.cfg pyproject.toml constraints-torch213.txt | $(CORE_VENV)/bin/python
	$(CORE_VENV)/bin/python -m pip install -q -c constraints-torch213.txt torch
	$(CORE_VENV)/bin/python -m pip install -q -e . pytest
	$(CORE_VENV)/bin/python -c "import importlib.util as u, torch; \
	  assert torch.__version__.split('+')[0] == '$(CORE_TORCH)', torch.__version__; \
	  assert u.find_spec('torchaudio') is None, 'torchaudio was installed'"
	touch $@

test-suites: $(SUITES_VENV)/.maeast-suites system-tools
	$(SUITES_VENV)/bin/python -m pytest -q -m "suites or slow" tests/test_suites.py tests/test_bench.py

$(SUITES_VENV)/bin/python:
	$(PYTHON) -m venv $(SUITES_VENV)

$(SUITES_VENV)/.maeast-suites: setup.cfg pyproject.toml constraints.txt | $(SUITES_VENV)/bin/python
	$(SUITES_VENV)/bin/python -m pip install -q -c constraints.txt -e ".[all,suites]"
	$(SUITES_VENV)/bin/python -m pip install -q -c constraints.txt --no-deps heareval==2021.1.3 hearvalidator==2021.0.2
	touch $@

# speech and sound generators the tests use (Debian/Ubuntu packages)
system-tools:
	@command -v espeak-ng >/dev/null && command -v sox >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq espeak-ng sox libsndfile1 >/dev/null; }
.PHONY: system-tools
