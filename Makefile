# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test lint format translations clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(INSTALLED)
	$(BIN)/python tools/devservices.py run

test: $(INSTALLED)
	$(BIN)/python tools/devservices.py test $(PYTEST_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(INSTALLED)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

translations: $(INSTALLED)
	$(BIN)/pybabel extract -F babel.cfg -o app/translations/messages.pot app templates
	$(BIN)/pybabel update -i app/translations/messages.pot -d app/translations
	$(BIN)/pybabel compile -d app/translations

clean:
	rm -rf $(VENV) .devdata

# CONTRACT §12: the app's requests per second against a bare Flask hello-world,
# and the Postgres statements and Redis commands each endpoint costs.
.PHONY: bench
bench: $(INSTALLED)
	$(BIN)/python tools/bench.py
