# The quick start is two commands: `make demo` and `make test`. Each sets itself up.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
ARGS    ?=
PYTEST_ARGS ?=
# make test's pytest-xdist workers: one for the TCG guests, one per record-DB backend's stack (tests/scheduling.py)
TEST_WORKERS ?= 3
XDIST   := -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder
# The project's packages; compiled before the suite runs, as the venv's are (see $(STAMP)): 0.2 CPU-s a process
PACKAGES := api workflows activities worker devstack store client core providers diskio bench osmorphing

.PHONY: demo test test-fast up lint bench sysdeps peers docs clean

# uv installs the same versions pip resolves (compared with pip freeze, 2026-12-06): 27 s against pip's 49 on
# the 2-core test machine, and every CI run starts from a fresh clone. It byte-compiles as pip does: the CI
# machines set PYTHONDONTWRITEBYTECODE, so without .pyc files every process the suite starts compiles its
# imports again (about 2 CPU-s each; a run starts some 150).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -e '.[test]'
	touch $@

# The native lane (diskio.native): the install above compiles it (hatch_build.py); this compiles it again
# when its source changes in a venv already made. It fails, where an install warns, when it cannot.
LANE := diskio/_lane.so
$(LANE): diskio/_lane.c hatch_build.py | $(STAMP)
	$(PY) hatch_build.py

sysdeps:
	@./deploy/install-sysdeps.sh

## peers: test peers that come from outside PyPI (Azurite from npm into ~/.cache/sterna/azurite)
peers: sysdeps $(STAMP)
	$(PY) -m tests.peers.azure.azurite

## demo: start the embedded stack and migrate the Debian guest, morphed and boot-checked (ARGS=--exit to stop after
##       verifying; ARGS=--quick for a small disk without an OS: no guest build, no morph, no boot check)
demo: sysdeps $(STAMP) $(LANE)
	STERNA_DATA_DIR=$(CURDIR)/.demo $(VENV)/bin/sterna demo $(ARGS)

## test: install every test peer, lint, type-check and run the whole suite
test: sysdeps $(STAMP) peers $(LANE)
	$(MAKE) --no-print-directory lint
	$(PY) -m compileall -q -j0 $(PACKAGES)
	$(VENV)/bin/pytest $(XDIST) --durations=25 $(PYTEST_ARGS)

## test-fast: the development loop: lint and every test but the TCG guest builds, morphs and boots
test-fast: sysdeps $(STAMP) peers $(LANE)
	$(MAKE) --no-print-directory lint
	$(PY) -m compileall -q -j0 $(PACKAGES)
	$(VENV)/bin/pytest $(XDIST) --durations=10 -m "not tcg" $(PYTEST_ARGS)

## up: Temporal dev server + worker + API in the foreground (data in ~/.sterna unless STERNA_DATA_DIR)
up: sysdeps $(STAMP) $(LANE)
	$(VENV)/bin/sterna up

## bench: the disk engine against cp --sparse, qemu-img convert and nbdcopy (ratios, median of 5)
bench: sysdeps $(STAMP) $(LANE)
	$(PY) -m bench.run

## lint: ruff, mypy, and the import contracts of pyproject.toml (layers, sandbox, no cycles)
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy $(PACKAGES)
	$(VENV)/bin/lint-imports

## docs: the Sphinx site in docs/_build/html: operator and provider guides, the API reference generated from
## the OpenAPI document with the samples tests/api/test_api_samples.py recorded; any warning fails it
docs: $(STAMP)
	$(VENV)/bin/sphinx-build -E -W --keep-going -q -b html docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

clean:
	rm -rf $(VENV) $(LANE) .demo .mypy_cache .ruff_cache .pytest_cache docs/_build docs/_generated
