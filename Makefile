# The two commands: `make run` and `make test`. Everything else is set up on demand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint bench profile soak screenshots clean

run: $(STAMP) ## Serve the portal on http://127.0.0.1:5000 (with the emulator when no client id is set)
	$(BIN)/python -m scripts.run

test: $(STAMP) lint ## Lint, type-check and run the whole test suite
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

bench: $(STAMP) ## Measure the portal's overhead (see docs/BENCHMARKS.md)
	@command -v wrk >/dev/null && command -v redis-server >/dev/null && command -v nginx >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq wrk redis-server nginx)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.login_flood

profile: $(STAMP) ## Where an authenticated request's time goes (pyinstrument)
	@command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)
	$(BIN)/python -m bench.profile

# make soak SOAK_SECONDS=90 SOAK_SESSIONS=200: bounded by bench/soak.py (10-3600 s, 1-1000 sessions).
SOAK_SECONDS ?= 600
SOAK_SESSIONS ?= 200
soak: $(STAMP) ## Two replicas, 200 sessions, 30-second tokens, steady load for 10 minutes (not part of `make test`)
	@command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)
	$(BIN)/python -m bench.soak --seconds $(SOAK_SECONDS) --sessions $(SOAK_SESSIONS)

screenshots: $(STAMP) ## Retake the README's screenshots in Chromium
	$(BIN)/python -m scripts.screenshots

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
