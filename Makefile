# The user-facing commands: `make demo`, `make test` and `make stack-test` (see README).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmsr-installed
PG_STAMP := $(VENV)/.mmsr-postgres-installed

.PHONY: demo test lint stack-test

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

# the Postgres drivers and the FAB auth manager the production stack needs (docs/deployment.md)
$(PG_STAMP): $(STAMP)
	$(PY) -m pip install -e '.[dev,postgres]'
	touch $(PG_STAMP)

demo: $(STAMP)
	$(VENV)/bin/mmsr demo --config configs/demo.yaml

test: $(STAMP)
	$(PY) -m pytest

# postgres, an MLflow server and the Airflow services on 127.0.0.1, the demo DAG through the REST API
stack-test: $(PG_STAMP)
	$(PY) tests/stack/run_stack.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
