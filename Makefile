# Two commands on a fresh machine:  `make run` (serve the bundled models on :8000)  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run test test-container install install-dev install-browser install-nginx lint typecheck unit export-cam clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Runtime install: the same two commands as the Dockerfile.
$(VENV)/.runtime: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt requirements-export.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt -r requirements-export.txt
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

# Headless Chromium for the page's browser test (tests/app/test_page_browser.py): playwright comes with the
# dev requirements; the browser is Debian's (playwright's own browser downloads are not used).
install-browser: $(VENV)/.dev
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

# Debian's nginx for the failover test behind the shipped load-balancer config (tests/deploy/test_failover.py).
install-nginx:
	command -v nginx >/dev/null || (apt-get update -qq && apt-get install -y -qq nginx)

# One command on a fresh machine: serves on 127.0.0.1 with authentication off (the service says so when it
# starts). Elsewhere, set LOCSVC_API_KEY instead:  make run HOST=0.0.0.0 AUTH=on LOCSVC_API_KEY=...
AUTH ?= off
# OpenVINO's compiled models (Intel CPUs): every start after the first loads them from there.
run: export LOCSVC_OPENVINO_CACHE_DIR ?= $(CURDIR)/cache/openvino
run: $(VENV)/.runtime
	LOCSVC_AUTH=$(AUTH) $(BIN)/uvicorn app.main:app --host $(HOST) --port $(PORT) --timeout-graceful-shutdown 30 \
		--limit-concurrency 32

lint: $(VENV)/.dev
	$(BIN)/ruff check app export tests bench
	$(BIN)/ruff format --check app export tests bench

typecheck: $(VENV)/.dev
	$(BIN)/mypy

unit: $(VENV)/.dev
	$(BIN)/pytest

# Lint as a user runs it (ruff check, ruff format --check), mypy strict over app/, export/ and bench/, then pytest.
test: $(VENV)/.dev install-browser install-nginx
	$(BIN)/ruff check app export tests bench
	$(BIN)/ruff format --check app export tests bench
	$(BIN)/mypy
	$(BIN)/pytest

# The image built from the Dockerfile and run with docker-compose.yml as a user would (podman and podman-compose
# here, installed by it), the `scale` profile behind its load balancer included (tests/container/run.sh). Skipped,
# with the reason, only where podman cannot run.
test-container: $(VENV)/.dev
	bash tests/container/run.sh

# Re-create the bundled CAM model from the pretrained weights (needs the export extra).
export-cam: $(VENV)/.dev
	$(BIN)/python -m export cam

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
