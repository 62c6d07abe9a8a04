# Two commands on a fresh machine with Python 3.11+ and make: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock
HOST   ?= 127.0.0.1
PORT   ?= 5000

.PHONY: run test lint lock widget translations clean

# (Re)install from the lock whenever it or pyproject.toml changes; the stamp makes repeat runs
# instant. Every package comes from the lock at its exact version and hash; the app itself is
# installed editable on top, without dependencies.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Development server: its settings (console mail, the demo shop, a random SECRET_KEY) and its
# SQLite database live in instance/dev/, which only commands given CLOSELOOP_INSTANCE_PATH
# load; links in emails point at this HOST and PORT. Jobs and the schedule run in this process
# (app.wsgi starts the runner thread): a REDIS_URL in your shell is not passed on.
run: export CLOSELOOP_INSTANCE_PATH ?= $(CURDIR)/instance/dev
run: export CLOSELOOP_PUBLIC_BASE_URL = http://$(HOST):$(PORT)
run: export REDIS_URL =
run: export CLOSELOOP_REDIS_URL =
run: $(STAMP)
	$(BIN)/python -m app.devconfig
	$(BIN)/flask --app app db upgrade
	$(BIN)/flask --app app demo --origin http://$(HOST):$(PORT) --origin http://localhost:$(PORT)
	$(BIN)/flask --app app.wsgi run --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check app tests bench widget
	$(BIN)/mypy

# Re-resolve the lock after changing dependencies in pyproject.toml (newest allowed versions,
# hashes for every platform); commit both files.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra test --extra dev --universal \
	    --python-version 3.11 --generate-hashes --quiet -o $(LOCK)

# Rebuild the minified widget served at /widget.js (a test fails when it is stale).
widget: $(STAMP)
	$(BIN)/python -m widget.build

# Re-extract translatable text, merge it into each catalog, compile (.mo files are committed;
# a test fails when one is stale).
translations: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k _ -k _l -k N_ -k lazy_gettext -k lazy_ngettext:1,2 --no-location --sort-output -o app/translations/messages.pot .
	$(BIN)/pybabel update -N -i app/translations/messages.pot -d app/translations -w 100
	$(BIN)/pybabel compile -d app/translations

clean:
	rm -rf $(VENV) .venv-lowest .pytest_cache .mypy_cache
