# Two entry points for a fresh clone: `make demo` and `make test`.
# torch is pinned first so a CPU machine takes the local CPU wheel instead of a multi-GB CUDA build;
# pyproject.toml keeps a range so the package installs next to a user's own torch.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test install lint docs clean chromium espeak
# MkDocs plugins print a banner about MkDocs 2 on every build; it says nothing about this site
export NO_MKDOCS_2_WARNING := 1
export DISABLE_MKDOCS_2_WARNING := true
LINTED := unified training tests benchmarks docs

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[dev,metrics,docs,serve,ui,ray,quant,speech]"
	-$(MAKE) --no-print-directory chromium espeak
	touch $@

# Debian's Chromium loads the `unified ui` page in a test (skipped without it); best effort where apt is missing
chromium:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium not installed: the page test will be skipped"

# espeak-ng says known words for the speech-as-text tests (skipped without it); best effort as for Chromium
espeak:
	@command -v espeak-ng >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null; } || \
		echo "espeak-ng not installed: the speech tests will be skipped"

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/unified demo

# the tests build the docs site too (tests/test_docs_site.py: mkdocs build --strict)
test: install
	$(VENV)/bin/ruff check $(LINTED)
	$(PY) -m pytest -q -ra

lint: install
	$(VENV)/bin/ruff check $(LINTED)

docs: install
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) build site *.egg-info
