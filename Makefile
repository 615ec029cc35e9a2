# Two commands a user needs: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	$(PY) -m compileall -q kt_launch  # bytecode up front: start-up stays fast even with PYTHONDONTWRITEBYTECODE
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m kt_launch.synthetic demo/ --quiet
	$(VENV)/bin/kt-launch --profile configs/demo.yaml --dry-run

test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

clean:
	rm -rf $(VENV) demo .pytest_cache .hypothesis
