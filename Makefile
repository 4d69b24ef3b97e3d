PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PYTEST := $(PY) -m pytest -p no:cacheprovider

.PHONY: venv run test static format test-unit test-integration test-e2e test-property-long bench schema clean browser

venv: $(INSTALLED)

# Reinstall only when the dependencies may have changed.
$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check --quiet -e '.[dev]'
	touch $(INSTALLED)

run: venv
	$(PY) -m devstack.run

# The static tier first: lint, format and types; then every test (the browser tier included: never skipped).
test: static browser
	$(PYTEST)

# The browser tier drives Debian's Chromium (Playwright cannot download browsers here).
CHROMIUM := /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's chromium for the browser tests"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium \
			|| { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; }; \
	else \
		echo "The browser tests need $(CHROMIUM). Install it with:  sudo apt-get install -y chromium"; \
		exit 1; \
	fi

static: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test-unit: venv
	$(PYTEST) tests/unit

test-integration: venv
	$(PYTEST) tests/integration

test-e2e: venv
	$(PYTEST) tests/e2e

# The membership state machine with many more and longer examples than `make test` runs (minutes).
test-property-long: venv
	PROPERTY_PROFILE=long $(PYTEST) --timeout=0 tests/property

bench: venv
	$(PY) -m bench

schema: venv
	$(PY) -m shared.schema

clean:
	rm -rf var $(VENV)
