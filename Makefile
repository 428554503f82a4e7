# make install / make test / make demo: everything a fresh machine needs.
# PY selects the interpreter to install into and run with. By default a virtual
# environment in .venv is created; to use your own environment: make test PY=python
VENV ?= .venv
PY ?= $(VENV)/bin/python
STAMP := $(dir $(PY)).m3i_mm-installed
PYTEST_ARGS ?=

.PHONY: install test demo clean-venv

install: $(STAMP)

$(STAMP): requirements/runtime.txt requirements/tests.txt setup.py tools/install_deps.py
	@if [ "$(PY)" = "$(VENV)/bin/python" ] && [ ! -x "$(PY)" ]; then \
		echo "[make] creating the virtual environment $(VENV)"; \
		python3 -m venv $(VENV) && $(PY) -m pip install -q --upgrade pip; fi
	$(PY) tools/install_deps.py --tests --editable
	@touch $@

test: install
	$(PY) -m pytest tests $(PYTEST_ARGS)

demo: install
	$(PY) tools/demo.py

clean-venv:
	rm -rf $(VENV)
