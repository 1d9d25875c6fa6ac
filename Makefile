# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
FLASK  := $(BIN)/flask --app wsgi
STAMP  := $(VENV)/.installed

.PHONY: run test install lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install whenever pyproject.toml changes, so a pulled dependency bump is never missed.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Set up, migrate, seed the demo program (credentials printed once) and serve on http://127.0.0.1:5000
run: install
	$(FLASK) db upgrade
	$(FLASK) demo
	$(FLASK) run --host 127.0.0.1 --port 5000

## Set up, lint and run the whole test suite (SQLite unless DATABASE_URL is set)
test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check app passes tests bench migrations wsgi.py
	$(BIN)/mypy app/domain passes

## Benchmark purchases against the reference endpoint under gunicorn, on SQLite and PostgreSQL
bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache
