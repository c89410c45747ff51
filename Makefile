# fashion-rerank developer commands. `make demo` and `make test` are the two a newcomer needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup opensearch opensearch-stop test test-fast lint demo hm-experiment proto bench clean

# Idempotent: a second run only re-installs when pyproject.toml or constraints.txt changed.
setup: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24,<27"
	$(BIN)/python -m pip install -c constraints.txt -e '.[train,test]'
	@touch $@

# A real single-node OpenSearch on 127.0.0.1:9200 with k-NN, ml-commons and neural-search.
opensearch: setup
	$(BIN)/fashion-rerank opensearch start --plugins knn,ml

opensearch-stop: setup
	$(BIN)/fashion-rerank opensearch stop

# The whole suite: fast unit tests (fake backend, no OpenSearch) and integration tests (real OpenSearch,
# real models); it starts the OpenSearch node itself when none is running (and stops it afterwards).
test: setup lint
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

# Unit tests only: no OpenSearch, no trained model, about a minute.
test-fast: setup
	$(BIN)/python -m pytest -ra tests/unit $(PYTEST_ARGS)

# ruff (lint + format check) and the import-linter layer contracts.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

demo: setup
	$(BIN)/fashion-rerank demo $(DEMO_ARGS)

# The MODA reproduction on H&M: implicit (purchase) labels vs judge grades vs the base model vs kNN order.
# The Kaggle files are never bundled: HM_ARTICLES=.../articles.parquet HM_TRANSACTIONS=.../transactions.parquet
# make hm-experiment [QUICK=1]; the report goes to reports/label-quality-hm[-quick]/ (docs/label-quality.md).
HM_ARTICLES ?= $(FR_HM_ARTICLES)
HM_TRANSACTIONS ?= $(FR_HM_TRANSACTIONS)
hm-experiment: setup
	$(BIN)/fashion-rerank experiment label-quality --data hm --hm-articles "$(HM_ARTICLES)" \
	  --hm-transactions "$(HM_TRANSACTIONS)" $(if $(QUICK),--quick,) $(EXPERIMENT_ARGS)

# Regenerate the gRPC stubs from proto/ (tests fail when they are stale).
proto: setup
	$(BIN)/python -m fashion_rerank.protogen

bench: setup
	$(BIN)/python bench/index_bench.py
	$(BIN)/python bench/rerank_bench.py

clean:
	rm -rf $(VENV) .pytest_cache reports
