# Two commands on a fresh machine:  `make run`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Stamps: pip runs again only when pyproject.toml (the dependency list) changed since, so a second
# `make run` starts at once. `run` installs what the proxy needs; `test` adds the test tools.
RUN_STAMP  := $(VENV)/.run-installed
TEST_STAMP := $(VENV)/.test-installed

.PHONY: run test install install-test system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(RUN_STAMP)
install-test: $(TEST_STAMP)

# Install and start the proxy on the embedded default config (SMTP 127.0.0.1:2525,
# links 127.0.0.1:8025, files in ./var/store). CONFIG=path/to/file.toml to use your own.
run: install
	$(BIN)/smtp-offload serve $(if $(CONFIG),--config $(CONFIG))

# Install everything the tests need (Python packages, and Debian packages when root) and run the suite.
test: system-deps install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

system-deps:
	./scripts/system-deps

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache

# Benchmark: receiver, peers (accept-and-discard, smtp-sink, passthroughs, Postfix as a relay) and
# the proxy on loopback, same load for each; prints a table and writes bench/results/<date>.json
# (about 5 minutes). BENCH_ARGS="--quick" for a ~40 s run. It needs moto's S3 server, one of the
# test tools, and Postfix (scripts/system-deps; its peer runs as root, skipped otherwise).
.PHONY: bench
bench: install-test
	$(BIN)/python -m bench $(BENCH_ARGS)
