# The two README commands are `make demo` and `make test`; everything else is a helper.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install protos check-protos config-doc lint eval bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: the pinned CPU wheel is on local disk; an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/fashion-search demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m fashion_search.rpc.build --check
	$(BIN)/python -m fashion_search.core.settings_doc --check
	$(BIN)/python -m pytest -q -x --durations=15

protos: $(STAMP)
	$(BIN)/python -m fashion_search.rpc.build

check-protos: $(STAMP)
	$(BIN)/python -m fashion_search.rpc.build --check

config-doc: $(STAMP)
	$(BIN)/python -m fashion_search.core.settings_doc

lint: $(STAMP)
	$(BIN)/ruff check .

eval: $(STAMP)
	$(BIN)/fashion-search eval category --catalog ../shared/data/clothing-small/train --queries ../shared/data/clothing-small/validation --json

bench: $(STAMP)
	$(BIN)/fashion-search bench

clean:
	rm -rf $(VENV) data .pytest_cache
