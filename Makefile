# Two commands on a fresh machine:  `make run`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"

# Install and start the proxy on the embedded default config (SMTP 127.0.0.1:2525,
# links 127.0.0.1:8025, files in ./var/store). CONFIG=path/to/file.toml to use your own.
run: install
	$(BIN)/smtp-offload serve $(if $(CONFIG),--config $(CONFIG))

# Install everything the tests need and run the whole suite.
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache
