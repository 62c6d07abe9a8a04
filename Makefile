# Two commands on a fresh machine with Python 3.11+ and make: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 5000

.PHONY: run test lint widget translations clean

# (Re)install whenever pyproject.toml changes; the stamp makes repeat runs instant.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m app.devconfig
	$(BIN)/flask --app app db upgrade
	$(BIN)/flask --app app demo --origin http://$(HOST):$(PORT) --origin http://localhost:$(PORT)
	$(BIN)/flask --app app run --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check app tests bench widget

# Rebuild the minified widget served at /widget.js (a test fails when it is stale).
widget: $(STAMP)
	$(BIN)/python -m widget.build

# Re-extract translatable text, merge it into each catalog, compile (.mo files are committed;
# a test fails when one is stale).
translations: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k _ --no-location --sort-output -o app/translations/messages.pot .
	$(BIN)/pybabel update -i app/translations/messages.pot -d app/translations -w 100
	$(BIN)/pybabel compile -d app/translations

clean:
	rm -rf $(VENV) .pytest_cache
