# qfx-compile developer entry points. Every target installs what it needs.
#   make demo   train/export/compile/C-simulate the bundled MNIST example
#   make test   the whole test suite (about 1,870 tests, 5-8 min on 2 idle cores)
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
JOBS   ?= 2

PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	@# Install the CPU torch build first when none is importable: a bare 'torch' would pull a CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test,examples]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/mnist_demo.py --out build/demo

test: $(STAMP)
	$(PY) -m pytest -q -n $(JOBS) --dist loadgroup

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf build .pytest_cache
