# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Two workers on the two-core CI machine; override with `make test WORKERS=1`.
WORKERS ?= 2

.PHONY: install demo test test-slow bench lint clean notebooks

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mdvi-lab demo

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -n $(WORKERS) --dist loadfile

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -n $(WORKERS) --dist loadfile

bench: $(STAMP)
	$(BIN)/python benchmarks/tabular.py
	$(BIN)/python benchmarks/minatar.py
	$(BIN)/python benchmarks/lm.py
	$(BIN)/python benchmarks/design.py

# Execute the course notebooks at full size into docs/notebooks/ (executed .ipynb, committed).
notebooks: $(STAMP)
	$(BIN)/python docs/build_notebooks.py

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) results .pytest_cache .hypothesis
