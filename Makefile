# Two commands for a newcomer: `make demo` and `make test`. Each builds .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/reviewqueue
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: demo test lint bench soak services browser install clean retrain-demo

$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet -e clients/python
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

# The embedded default, as deployed: SQLite, gunicorn, a Celery worker and celery beat on
# kombu's filesystem broker (.demo/; a CELERY_BROKER_URL in the environment wins).
# Migrates, sets up the demo, then serves http://127.0.0.1:8000/ until Ctrl-C stops all.
demo: $(STAMP)
	$(BIN)/python -m reviewqueue.launcher demo

# The loop closed, on the demo's SQLite file: reviews, labels pulled with the Python
# client, a retrained next version, held-out accuracy before and after. Starts and
# stops its own server on a free port.
retrain-demo: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python manage.py retrain_demo

services:
	scripts/ensure-services.sh

# The browser tests (tests/ui) drive Debian's Chromium, never a browser Playwright downloads.
browser:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(STAMP) services browser lint
	DATABASE_URL=$(TEST_DATABASE_URL) TEST_REDIS_URL=$(TEST_REDIS_URL) \
		$(BIN)/python -m pytest

bench: $(STAMP) services
	DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/python bench/run.py

# The mixed-load soak with faults (tests/soak): the whole stack for SOAK_SECONDS, then
# a drain and the checks. Its own database (<name>_soak on TEST_DATABASE_URL's server)
# and its own redis-server on a free port.
SOAK_SECONDS ?= 180
soak: $(STAMP) services
	DATABASE_URL=$(TEST_DATABASE_URL) SOAK_SECONDS=$(SOAK_SECONDS) \
		$(BIN)/python -m pytest tests/soak -m soak -s

clean:
	rm -rf $(VENV) staticfiles reviewqueue.sqlite3 reviewqueue.sqlite3-wal reviewqueue.sqlite3-shm .demo
