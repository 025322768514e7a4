# Two entry points for a fresh machine; each bootstraps .venv itself (idempotent).
#   make run   - the main job on its built-in default
#   make test  - the test suite
VENV    := .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PYTHON3 ?= python3
MODERN  := import sys; sys.exit(sys.version_info < (3, 11))

.PHONY: run test clean

# Reinstall only when the pinned set or the package metadata changes. qm9pack (QM9's data,
# pyproject's `qm9` extra) goes in without the pandas it declares and QPT never imports.
# A .venv of an older Python (made before, or by one) is made again; an old python3 is one line,
# not pip's "No matching distribution" for the first pin that needs 3.11.
$(STAMP): requirements.lock pyproject.toml Makefile
	@$(PYTHON) -c '$(MODERN)' 2>/dev/null || { \
	  $(PYTHON3) -c '$(MODERN)' 2>/dev/null || { \
	    echo "error: QPT needs Python 3.11 or newer; $(PYTHON3) is" \
	      "$$($(PYTHON3) -V 2>/dev/null || echo not to be found): pass one," \
	      "e.g. make PYTHON3=python3.11" >&2; exit 1; }; \
	  rm -rf $(VENV) && $(PYTHON3) -m venv $(VENV); }
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps qm9pack==1.0.3
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(PYTHON) experiments/md17.py --config experiments/configs/md17.py:water

# Two workers (pytest-xdist): CI's two cores. A test file stays on one worker, so its
# module-scoped fixtures (e.g. the multi-device runs) are computed once; files go out in the
# order tests/conftest.py gives them, the slowest first.
test: $(STAMP)
	$(PYTHON) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder tests

clean:
	rm -rf $(VENV) .jax_cache
