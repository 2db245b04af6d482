# contrastive-lab: every command creates .venv and installs into it when needed.
#   make demo   train SimCLR on CIFAR-10 on the CPU and report kNN accuracy vs a random encoder
#   make test   unit tests, then every chapter under nbmake in smoke mode
#   make lab    JupyterLab with jupytext (the .py chapters open as notebooks)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Smoke mode: every chapter runs in seconds (see contrastive_lab/runtime.py).
SMOKE  := export CONTRASTIVE_LAB_SMOKE=1;
CHAPTERS := $(sort $(wildcard chapters/[0-9][0-9]_*.ipynb))
# pytest exits 5 when it collected no tests. For us that means the suite went missing (a bad
# path, a broken conftest), never success, so it fails with a message instead of passing quietly.
PYTEST = run() { "$$@"; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose" >&2; exit 1; fi; exit $$rc; }; run $(BIN)/python -m pytest

.PHONY: demo bench bench-env install test unit chapters lint lab sync-chapters execute-chapters constraints clean help handout

help:
	@sed -n '1,5p' Makefile

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The main job: SimCLR on CIFAR-10 on the CPU; prints kNN top-1 of a random encoder, then trained.
# DEMO_ARGS overrides config keys, e.g. `make demo DEMO_ARGS="epochs=1 dataset=synthetic"`.
DEMO_OUT  ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)
DEMO_ARGS ?=
demo: $(STAMP)
	$(BIN)/python -m contrastive_lab train --preset simclr-cifar10-cpu --out $(DEMO_OUT) $(DEMO_ARGS)

test: unit chapters

unit: $(STAMP)
	$(PYTEST) tests

chapters: $(STAMP)
	$(SMOKE) $(PYTEST) --nbmake --nbmake-timeout=600 $(CHAPTERS)

lint: $(STAMP)
	$(BIN)/ruff check contrastive_lab tests benchmarks scripts solutions chapters/*.py

# The .py chapters open as notebooks: make "Jupytext Notebook" JupyterLab's default viewer for Python
# files, in the settings overrides of the venv's JupyterLab (never the user's ~/.jupyter). Other
# overrides in that file, and a python viewer someone already chose there, are kept.
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json
# JupyterLab refuses to start as root ("Running as root is not recommended"); in a container the user
# often is root, so there `make lab` says so and passes --allow-root. LAB_ARGS: more options
# (e.g. LAB_ARGS="--no-browser --port=8899").
LAB_AS_ROOT := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root,)
LAB_ARGS ?=
lab: $(STAMP)
	$(BIN)/jupytext-config --settings-file $(LAB_SETTINGS) set-default-viewer python
	@if [ -n "$(LAB_AS_ROOT)" ]; then echo "make lab: you are root (a container?): starting JupyterLab with --allow-root"; fi
	$(BIN)/jupyter lab chapters $(LAB_AS_ROOT) $(LAB_ARGS)

# After editing a chapter's .py file: rewrite its .ipynb twin (outputs are kept).
sync-chapters: $(STAMP)
	$(BIN)/jupytext --sync chapters/[0-9][0-9]_*.py

# Re-run every chapter in demo mode and store the outputs in the .ipynb (slow: minutes per chapter).
execute-chapters: $(STAMP)
	for nb in $(CHAPTERS); do $(BIN)/jupytext --sync --execute "$${nb%.ipynb}.py" || exit 1; done

# A class handout: the book and the library without solutions/ (see scripts/make_handout.py).
HANDOUT ?= handout
handout:
	$(PYTHON) scripts/make_handout.py $(HANDOUT)

constraints: $(STAMP)
	{ echo "# Exact versions that \`make\` and CI install (pip install -c constraints.txt -e '.[dev]')."; \
	  echo "# Users get the version ranges in pyproject.toml; regenerate with \`make constraints\`."; \
	  $(BIN)/pip freeze --exclude-editable | grep -v -i '^contrastive' | sort -f; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

# Benchmarks (results go to BENCHMARKS.md). The peer library (lightly) lives only in .venv-bench.
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed-stamp: pyproject.toml constraints.txt benchmarks/requirements.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet -c constraints.txt -e . -r benchmarks/requirements.txt
	touch $@

bench-env: $(BENCH_VENV)/.installed-stamp

bench: bench-env
	$(BENCH_VENV)/bin/python benchmarks/bench_views.py
	$(BENCH_VENV)/bin/python benchmarks/bench_nt_xent.py
	$(BENCH_VENV)/bin/python benchmarks/bench_train.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache
