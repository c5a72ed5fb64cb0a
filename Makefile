# The README's two commands: `make serve` and `make test`. Everything installs into .venv on first use.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
DEMO_MAR := model_store/djldml-demo.mar

.PHONY: serve test test-unit test-integration lint stack demo-model bench ablation clean

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PY) >/dev/null || { echo "need $(PY)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and exactly: the CPU wheel on disk (see pyproject.toml)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	# `trainer synth-identities` reads seven of its ten faces from insightface's sample images; only the image
	# files are used (never imported), so without its dependencies: they would add opencv-python beside -headless
	$(BIN)/pip install --quiet --no-deps insightface==2.1
	touch $(STAMP)

install: $(STAMP)

# Embedded default: no Redis, no TorchServe; the in-process backend loads model_store/*.mar.
serve: $(STAMP) $(DEMO_MAR)
	$(BIN)/python -m service --host 127.0.0.1 --port $(PORT)

# Local full stack without Docker: private Redis + Celery worker + TorchServe + uvicorn.
stack: $(STAMP) $(DEMO_MAR)
	$(BIN)/python -m devstack --port $(PORT)

$(DEMO_MAR): | $(STAMP)
	$(MAKE) demo-model

# synth → prepare → train c3d-small → export; deterministic. The result is a SYNTHETIC demo model.
demo-model: $(STAMP)
	$(BIN)/python -m trainer demo --out $(DEMO_MAR)

test: $(STAMP)
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
	@command -v docker-compose >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; }
	@test -x /usr/bin/chromium || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }  # the results-page test (Playwright drives it; no browser download)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -ra

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration and not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

# The SYNTHETIC multi-identity benchmark, 4 objectives x 3 seeds (docs/training.md; ~45 min on 2 busy cores)
ablation: $(STAMP)
	$(BIN)/python -m trainer synth-identities --out runs/identities/synthetic --no-progress
	$(BIN)/python -m trainer prepare --source runs/identities/synthetic/manifest.csv --out runs/identities/prepared \
		--fps 25 --workers 2 --no-progress
	$(BIN)/python -m trainer ablation --config trainer/configs/identities.toml --seeds 3 \
		--ablation-out runs/identities/ablation

clean:
	rm -rf runs .pytest_cache .ruff_cache
