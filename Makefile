# The two commands of the quick start: `make dev` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test query install browser stack-up stack-down stack-status bench lock validate clean

$(STAMP): pyproject.toml constraints.txt
	@echo "installing the Python dependencies into $(VENV) (pip, quiet) ..."
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Debian's chromium for the browser test (tests/ui/test_ui_browser.py drives it with Playwright;
# nothing is downloaded at run time). Idempotent: a machine that has it skips this. Only `make test`
# needs it; where apt cannot install it, the browser test skips saying so (in CI, CI=true, it fails).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium (apt) for the browser test ..."; \
	  { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; } \
	  || { [ "$$CI" != true ] && echo "warning: chromium could not be installed; the browser test will skip"; }; }

# Local stack + `dagster dev` on 127.0.0.1:3000 + demo traffic; Ctrl-C stops everything.
dev: install
	@$(BIN)/python -m devstack dev

# The suite runs on TEST_WORKERS pytest-xdist workers; each starts its own local stack on free ports
# and tears it down. Each test file runs on one worker (--dist loadfile), so a module-scoped fixture
# (the browser on a populated instance, the production profile's servers) is set up once.
TEST_WORKERS ?= 4
test: install browser
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

validate: install
	DAGSTER_HOME=$(CURDIR)/.dagster $(BIN)/dagster definitions validate -w workspace.yaml

stack-up: install
	$(BIN)/python -m devstack up
stack-down:
	$(BIN)/python -m devstack down
stack-status:
	$(BIN)/python -m devstack status

bench: install
	$(BIN)/python -m bench

lock:
	rm -rf /tmp/mailroom-lock && $(PYTHON) -m venv /tmp/mailroom-lock
	/tmp/mailroom-lock/bin/python -m pip install --quiet --upgrade pip
	/tmp/mailroom-lock/bin/python -m pip install --quiet '.[dev]'
	( echo '# Lock file: the exact set a fresh install gets. Regenerate with `make lock`.'; \
	  /tmp/mailroom-lock/bin/python -m pip freeze --exclude mailroom ) > constraints.txt

clean:
	rm -rf $(VENV) .devstack

# Ad-hoc read-only query that waits out a writer's lock: make query SQL="SELECT ..."
query: install
	$(BIN)/python -m pipelines.query "$(SQL)"
