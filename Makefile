# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test lint format translations lock clean

# The locks pin every package with its hashes; the dev lock holds the runtime
# lock's exact versions, so what the tests run is what a buildpack deploys.
LOCK := requirements.txt
DEV_LOCK := requirements-dev.txt
COMPILE := $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 \
	--generate-hashes --custom-compile-command 'make lock' --quiet

$(INSTALLED): pyproject.toml $(LOCK) $(DEV_LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# Re-resolve both locks from pyproject.toml (uv reads no pip configuration,
# so no machine's own index ends up in them). `make lock UPGRADE=1` takes the
# newest releases the ranges allow; otherwise current pins are kept.
lock: $(INSTALLED)
	$(COMPILE) $(if $(UPGRADE),--upgrade) -o $(LOCK)
	$(COMPILE) $(if $(UPGRADE),--upgrade) --extra dev -c $(LOCK) -o $(DEV_LOCK)
	$(MAKE) $(INSTALLED)

# `make run DEMO=servers`: the same issuer behind nginx, with two MCP servers
# registered as its resources (tools/demo_servers.py).
run: $(INSTALLED)
	$(BIN)/python tools/devservices.py run $(if $(DEMO),--demo $(DEMO))

# The whole suite runs on pytest-xdist, one worker per CPU, each worker with a
# Postgres and a Redis of its own; named test files run in one process
# (`make test PYTEST_ARGS=tests/test_token.py`); `-n N` in PYTEST_ARGS decides.
test: $(INSTALLED)
	$(BIN)/python tools/devservices.py test $(PYTEST_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(INSTALLED)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

translations: $(INSTALLED)
	$(BIN)/pybabel extract -F babel.cfg -o app/translations/messages.pot app templates
	$(BIN)/pybabel update -i app/translations/messages.pot -d app/translations
	$(BIN)/pybabel compile -d app/translations

clean:
	rm -rf $(VENV) .devdata

# README, "Performance": the app's requests per second against a bare Flask hello-world,
# and the Postgres statements and Redis commands each endpoint costs.
# `make bench BENCH_SCALE=large` first fills the database as a large deployment
# looks (tools/bench_scale.py) and checks every counted statement's plan.
.PHONY: bench
bench: $(INSTALLED)
	$(if $(BENCH_SCALE),BENCH_SCALE='$(BENCH_SCALE)' )$(BIN)/python tools/bench.py
