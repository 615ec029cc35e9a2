# Two commands a user needs: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-quick install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	$(PY) -m compileall -q kt_launch  # bytecode up front: start-up stays fast even with PYTHONDONTWRITEBYTECODE
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) devtools/synthetic.py demo/ --quiet
	$(VENV)/bin/kt-launch --profile configs/demo.yaml --dry-run

# Test workers: one per logical CPU (pytest-xdist; `auto` would count physical cores). JOBS=0: one process.
JOBS ?= logical
SETUPS := tests/contract/setup_venvs.sh tests/backend/setup_env.sh tests/fleet/setup_router_venv.sh

# The three test venvs start building in the background (logs in .cache/setup-*.log) while the
# import contract and the first tests run; a fixture that needs one runs its script again, which
# waits on the script's lock and then finds it built (or reports the build's error).
test: $(STAMP)
	@if [ "$$KT_LAUNCH_NO_VENV_SETUP" != 1 ]; then mkdir -p .cache; \
	  for s in $(SETUPS); do (bash $$s >.cache/setup-$$(basename $$s .sh).log 2>&1 &); done; fi
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -n $(JOBS) --dist worksteal --durations=20

# A first look in a few minutes: the import contract and the tests that need none of the three test venvs
# (no kt-kernel, SGLang or router build, nothing written to .cache/); `make test` runs everything.
QUICK := tests/core tests/resolve tests/render tests/preflight tests/memory
test-quick: $(STAMP)
	$(VENV)/bin/lint-imports
	KT_LAUNCH_NO_VENV_SETUP=1 $(PY) -m pytest -n $(JOBS) --dist worksteal $(QUICK)

clean:
	rm -rf $(VENV) demo .pytest_cache .hypothesis
